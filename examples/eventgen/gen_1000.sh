#!/bin/bash
# Generate 1000 events with release 14.2.10; the result file and the log form the output sandbox.
set -euo pipefail
echo "job $CLOBI_JOB_ID attempt $CLOBI_ATTEMPT on $CLOBI_CORES core(s), release $(cat "$CLOBI_RELEASE_DIR/VERSION")"
"$CLOBI_RELEASE_DIR/bin/generate" 1000 "events_1000.dat" 2>&1 | tee gen_1000.log
