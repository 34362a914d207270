#!/bin/sh
# fuzz/run.sh DIR SECONDS TARGET... - runs each libFuzzer target DIR/fuzz_TARGET for
# SECONDS on a scratch copy of fuzz/corpus/TARGET (plus fuzz/regressions/TARGET), so the
# tree is not modified. Prints one line per target (runs, coverage, corpus size); a
# crash, leak, sanitizer report or timeout fails the run, and the input that caused it
# is kept in fuzz-out/TARGET/ (printed). Exit status: 0 when every target ran clean.
set -u
dir=$1; secs=$2; shift 2
root=$(cd "$(dirname "$0")/.." && pwd)
out=$root/fuzz-out
mkdir -p "$out"
status=0
for t in "$@"; do
  bin=$dir/fuzz_$t
  scratch=$(mktemp -d "${TMPDIR:-/tmp}/certgate-fuzz-$t.XXXXXX")
  cp -r "$root/fuzz/corpus/$t/." "$scratch/"
  [ -d "$root/fuzz/regressions/$t" ] && cp -r "$root/fuzz/regressions/$t/." "$scratch/"
  rm -rf "$out/$t"; mkdir -p "$out/$t"
  log=$out/$t.log
  # -timeout: one input may take at most 25 s (a PKCS#12 at Java's iteration cap is
  # slow by design); -rss_limit_mb: the gateway's own limits keep far below it
  ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
    "$bin" -max_total_time="$secs" -timeout=25 -rss_limit_mb=2048 -max_len=8192 \
    -artifact_prefix="$out/$t/" -print_final_stats=1 "$scratch" >"$log" 2>&1
  rc=$?
  runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
  last=$(grep -E '^#[0-9]+' "$log" | tail -1)
  cov=$(echo "$last" | sed -n 's/.* cov: \([0-9]*\).*/\1/p')
  ft=$(echo "$last" | sed -n 's/.* ft: \([0-9]*\).*/\1/p')
  corp=$(echo "$last" | sed -n 's/.* corp: \([0-9]*\/[0-9a-zA-Z]*\).*/\1/p')
  if [ $rc -eq 0 ]; then
    printf 'fuzz %-9s ok    %ss  %s runs  cov %s  ft %s  corpus %s\n' "$t" "$secs" "${runs:-?}" \
      "${cov:-?}" "${ft:-?}" "${corp:-?}"
  else
    status=1
    printf 'fuzz %-9s FAIL  exit %d after %s runs; log %s; input: %s\n' "$t" $rc "${runs:-?}" \
      "$log" "$(ls "$out/$t" | head -3 | tr '\n' ' ')"
    grep -E 'ERROR: |SUMMARY: |check failed' "$log" | head -5 | sed 's/^/    /'
  fi
  rm -rf "$scratch"
done
exit $status
