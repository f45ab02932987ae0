"""What every clobi component shares: models, config, AWS names and access, the job protocol."""
