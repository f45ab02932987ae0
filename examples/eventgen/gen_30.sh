#!/bin/bash
# Generate 30 events with release 14.2.10; the result file and the log form the output sandbox.
set -euo pipefail
echo "job $CLOBI_JOB_ID attempt $CLOBI_ATTEMPT on $CLOBI_CORES core(s), release $(cat "$CLOBI_RELEASE_DIR/VERSION")"
"$CLOBI_RELEASE_DIR/bin/generate" 30 "events_30.dat" 2>&1 | tee gen_30.log
