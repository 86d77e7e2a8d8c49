/* tune_pick: how fagen-autotune chooses a case's variant from its measured
 * times — the fastest, ties to the earlier name, kept over the default only
 * past a margin — and whether a second, separate timing of the winner
 * against the default alone confirms it.  No GPU: plain arithmetic on times,
 * so the rules are tested on any machine (tests/test_tune_pick.c). */
#ifndef TUNE_PICK_H
#define TUNE_PICK_H

#include "fagen.h"

/* The index of the least positive ms[k] over k in [0, n) other than skip
 * (-1: skip none), equal times to the earlier variant name; -1 if none. */
int tp_fastest(const fagen_variant *cand, const double *ms, int n, int skip);

/* The case's winner and runner-up (indices, -1 if none).  The fastest
 * candidate wins unless the default (index deflt, -1 if it has no time) is
 * within margin of it (default time <= winner time * (1 + margin)): then the
 * default stays.  The runner-up is the fastest of the others. */
void tp_pick(const fagen_variant *cand, const double *ms, int n, int deflt, double margin,
             int *winner, int *runner_up);

/* The confirmation of a winner other than the default: both timed again, by
 * themselves.  1 if the winner is still at least half the margin faster
 * (ms_default >= ms_winner * (1 + margin / 2)), else 0 (also when either
 * time is missing).  Half, so that a real gain near the margin survives the
 * second measurement's noise while a gain that was noise alone rarely does. */
int tp_confirms(double ms_default, double ms_winner, double margin);

#endif
