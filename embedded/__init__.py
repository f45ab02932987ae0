"""clobi's embedded AWS endpoint: a moto server on 127.0.0.1 that only its key holder may use,
the daemon `clobi local` drives, and the adjustments it makes to moto. Needs moto (the `local`
extra); nothing a VM runs imports it."""
