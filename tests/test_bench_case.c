/* fagen-bench's matching of --variant to cells (bench/fg_bench_case.c). */
#include <criterion/criterion.h>
#include <string.h>

#include "fg_bench_case.h"

/* Regression: a forced wgmma forward variant (fwdwg_...) used to be dropped
 * silently by fagen-bench --mode fwd, which matched only FAGEN_OP_FWD. */
Test(bench_case, forward_cells_take_both_forward_families) {
  fg_case c;
  memset(&c, 0, sizeof c);
  c.mode = FG_MODE_FWD;
  cr_assert(fg_case_takes_op(&c, FAGEN_OP_FWD));
  cr_assert(fg_case_takes_op(&c, FAGEN_OP_FWD_WGMMA));
  cr_assert_not(fg_case_takes_op(&c, FAGEN_OP_BWD));
  cr_assert_not(fg_case_takes_op(&c, FAGEN_OP_BWD_DET));
}

Test(bench_case, backward_cells_take_their_backward_only) {
  fg_case c;
  memset(&c, 0, sizeof c);
  for (int mode = FG_MODE_BWD; mode <= FG_MODE_FWDBWD; mode++) {
    c.mode = (fg_mode)mode;
    c.deterministic = 0;
    cr_assert(fg_case_takes_op(&c, FAGEN_OP_BWD));
    cr_assert_not(fg_case_takes_op(&c, FAGEN_OP_BWD_DET));
    cr_assert_not(fg_case_takes_op(&c, FAGEN_OP_FWD));
    cr_assert_not(fg_case_takes_op(&c, FAGEN_OP_FWD_WGMMA));
    c.deterministic = 1;
    cr_assert(fg_case_takes_op(&c, FAGEN_OP_BWD_DET));
    cr_assert_not(fg_case_takes_op(&c, FAGEN_OP_BWD));
  }
}
