# Sourced by check.sh and check_java.sh: the section headers and the way a check ends.

section() { printf '\n===== %s (%s, +%ds) =====\n' "$1" "$(date -u +%H:%M:%S)" "$SECONDS"; }

# finish_check LOG TITLE DRY_NOTE: runs the caller's main into LOG and the terminal, appends the verdict
# ("TITLE PASSED" or "TITLE FAILED", always the last line; DRY_NOTE above it when not empty) and exits with main's
# status. The pipe keeps the log complete when main fails halfway; PIPESTATUS gives main's own exit status.
finish_check() {
  local log=$1 title=$2 dry_note=$3 status verdict
  set +e
  main 2>&1 | tee "$log"
  status=${PIPESTATUS[0]}
  set -e
  if [[ $status == 0 ]]; then verdict="$title PASSED"; else verdict="$title FAILED"; fi
  {
    echo
    if [[ -n $dry_note ]]; then echo "$dry_note"; fi
    echo "$(basename "$0"): exit status $status after ${SECONDS}s"
    echo "$verdict"
  } | tee -a "$log"
  exit "$status"
}
