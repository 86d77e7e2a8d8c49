#include "tune_pick.h"

#include "fg_tool_util.h"

int tp_fastest(const fagen_variant *cand, const double *ms, int n, int skip) {
  int best = -1;
  for (int k = 0; k < n; k++) {
    if (k == skip || !(ms[k] > 0)) continue;
    if (best < 0 || ms[k] < ms[best] ||
        (ms[k] == ms[best] && fg_variant_name_cmp(&cand[k], &cand[best]) < 0))
      best = k;
  }
  return best;
}

void tp_pick(const fagen_variant *cand, const double *ms, int n, int deflt, double margin,
             int *winner, int *runner_up) {
  int w = tp_fastest(cand, ms, n, -1);
  if (w >= 0 && deflt >= 0 && deflt < n && w != deflt && ms[deflt] > 0 &&
      ms[deflt] <= ms[w] * (1.0 + margin))
    w = deflt;
  *winner = w;
  *runner_up = w >= 0 ? tp_fastest(cand, ms, n, w) : -1;
}

int tp_confirms(double ms_default, double ms_winner, double margin) {
  return ms_default > 0 && ms_winner > 0 && ms_default >= ms_winner * (1.0 + margin / 2);
}
