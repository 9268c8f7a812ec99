/* SPDX-License-Identifier: MIT */
/*
 * test_workload.c - the workload runner under the sanitizers: each workload
 * for a few short samples with several threads, no errors, and its counts
 * agreeing with the mm's lock statistics (see tests/test_bench_cli.py for
 * the same from Python).
 */
#include <errno.h>
#include <string.h>

#include "mm.h"
#include "mmap_lock_stats.h"
#include "test_designs.h"
#include "test_util.h"
#include "workload.h"

static void run(int workload, int threads, struct wl_result *out,
		struct mmap_lock_stats_snapshot *st)
{
	struct mm_struct *mm = tu_mm_alloc(0);
	struct wl_config cfg = {
		.workload = workload, .threads = threads, .region_bytes = 64 * MM_PAGE_SIZE,
		.mix_vmas = 8, .mix_pages = 16, .mix_remap_per_million = 20000,
		.mix_write_percent = 20, .warmup_ns = 20 * TU_NS_PER_MS,
		.interval_ns = 30 * TU_NS_PER_MS, .samples = 3, .seed = 7,
	};

	CHECK(mm != NULL);
	if (!mm)
		return;
	CHECK_EQ(wl_run(mm, &cfg, out), 0);
	CHECK_EQ(out->errors, 0u);
	CHECK_EQ(out->samples, 3u);
	CHECK(out->ops_all >= out->ops_total);
	CHECK(out->ops_total > 0);
	CHECK(out->cpu_ns > 0);		/* the whole process's, all threads */
	CHECK_EQ(mmap_lock_stats_read(mm, st), 0);
	CHECK_EQ(mm_map_count(mm), 0u);		/* everything unmapped again */
	CHECK_EQ(mm_free(mm), 0);
}

/*
 * Read-side acquisitions: of the mmap lock, plus (per_vma) the faults done
 * under a VMA lock alone; every other outcome fell back to the mmap lock.
 */
static uint64_t reads(const struct mmap_lock_stats_snapshot *st)
{
	return st->acquisitions[0] + st->vma_lock[MMAP_VMA_LOCK_SUCCESS];
}

static void t_page_fault1(void)
{
	struct wl_result out;
	struct mmap_lock_stats_snapshot st;

	run(WL_PAGE_FAULT1, 3, &out, &st);
	CHECK_EQ(reads(&st), out.ops_all);
}

static void t_mmap1(void)
{
	struct wl_result out;
	struct mmap_lock_stats_snapshot st;

	run(WL_MMAP1, 3, &out, &st);
	CHECK_EQ(st.acquisitions[1], 2 * out.ops_all);
}

static void t_fault_mix(void)
{
	struct wl_result out;
	struct mmap_lock_stats_snapshot st;
	uint64_t remaps;

	run(WL_FAULT_MIX, 3, &out, &st);
	/* Set-up maps 8 VMAs, each re-map is munmap + mmap, the clean-up one munmap. */
	remaps = (st.acquisitions[1] - 8 - 1) / 2;
	CHECK_EQ((st.acquisitions[1] - 8 - 1) % 2, 0u);
	CHECK_EQ(reads(&st) + remaps, out.ops_all);
}

/* Each thread its own 8 VMAs: 3 threads set up 24, unmapped together at the end. */
static void t_fault_private(void)
{
	struct wl_result out;
	struct mmap_lock_stats_snapshot st;
	uint64_t remaps;

	run(WL_FAULT_PRIVATE, 3, &out, &st);
	remaps = (st.acquisitions[1] - 3 * 8 - 1) / 2;
	CHECK_EQ((st.acquisitions[1] - 3 * 8 - 1) % 2, 0u);
	CHECK(remaps > 0);
	CHECK_EQ(reads(&st) + remaps, out.ops_all);
	CHECK_EQ(out.segv, 0u);		/* nobody re-maps another thread's VMA */
}

/* The control: no lock at all, one op per block of computation. */
static void t_compute(void)
{
	struct wl_result out;
	struct mmap_lock_stats_snapshot st;

	run(WL_COMPUTE, 2, &out, &st);
	CHECK_EQ(st.acquisitions[0] + st.acquisitions[1], 0u);
}

/* No re-maps: the write lock is taken only to set up and to clean up. */
static void t_fault_read(void)
{
	struct wl_result out;
	struct mmap_lock_stats_snapshot st;

	run(WL_FAULT_READ, 3, &out, &st);
	CHECK_EQ(st.acquisitions[1], 8u + 1u);
	CHECK_EQ(reads(&st), out.ops_all);
	CHECK_EQ(out.segv, 0u);
}

static void t_maps_reader(void)
{
	struct wl_result out;
	struct mmap_lock_stats_snapshot st;

	run(WL_MAPS_READER, 2, &out, &st);
	CHECK(out.side_ops_total > 0);
	CHECK_EQ(reads(&st), out.ops_all + out.side_ops_total);
}

static void t_bad_configs(void)
{
	struct mm_struct *mm = tu_mm_alloc(0);
	struct wl_result out;
	struct wl_config ok = { .workload = WL_MMAP1, .threads = 1,
				.region_bytes = MM_PAGE_SIZE, .interval_ns = 1000000, .samples = 1 };
	struct wl_config bad;

	bad = ok; bad.workload = 9;
	CHECK_EQ(wl_run(mm, &bad, &out), -EINVAL);
	bad = ok; bad.workload = -1;
	CHECK_EQ(wl_run(mm, &bad, &out), -EINVAL);
	bad = ok; bad.threads = 0;
	CHECK_EQ(wl_run(mm, &bad, &out), -EINVAL);
	bad = ok; bad.region_bytes = 100;
	CHECK_EQ(wl_run(mm, &bad, &out), -EINVAL);
	bad = ok; bad.samples = WL_MAX_SAMPLES + 1;
	CHECK_EQ(wl_run(mm, &bad, &out), -EINVAL);
	bad = ok; bad.workload = WL_FAULT_MIX; bad.mix_write_percent = 101; bad.mix_vmas = 1;
	bad.mix_pages = 1;
	CHECK_EQ(wl_run(mm, &bad, &out), -EINVAL);
	CHECK_EQ(mm_free(mm), 0);
}

static const struct tu_test tests[] = {
	TU_TEST(t_page_fault1),
	TU_TEST(t_mmap1),
	TU_TEST(t_fault_mix),
	TU_TEST(t_maps_reader),
	TU_TEST(t_fault_private),
	TU_TEST(t_fault_read),
	TU_TEST(t_compute),
	TU_TEST(t_bad_configs),
};

int main(int argc, char **argv)
{
	return tu_run_designs("test_workload", tests, (int)(sizeof(tests) / sizeof(tests[0])), argc,
		      argv, NULL);
}
