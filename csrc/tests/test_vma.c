/* SPDX-License-Identifier: MIT */
/*
 * test_vma.c - the VMA tree (vma.c): every function on hand-built trees and
 * at the edges (empty tree, one node, touching and overlapping intervals,
 * every kind of erase, lookups at and between bounds), the checker against
 * deliberate corruption, and a randomized run against a sorted-array model
 * with vma_tree_check() after every step.
 *
 *   test_vma [--list] [--only NAME]
 */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "test_util.h"
#include "vma.h"

#define PG 4096ull

/* Nodes come from one static pool, so no test can leak one. */
#define POOL 4096
static struct vm_area_struct pool[POOL];

static struct vm_area_struct *node(int i, uint64_t start, uint64_t end)
{
	struct vm_area_struct *v = &pool[i];

	memset(v, 0, sizeof(*v));
	v->vm_start = start;
	v->vm_end = end;
	return v;
}

/* pool[i] as page [first, first + pages). */
static struct vm_area_struct *pages(int i, uint64_t first, uint64_t npages)
{
	return node(i, first * PG, (first + npages) * PG);
}

static void check_tree(const struct vma_tree *t)
{
	const char *why = NULL;
	int rc = vma_tree_check(t, &why);

	CHECK_MSG(rc == 0, "vma_tree_check: %d (%s)", rc, why ? why : "no reason given");
}

static void insert_ok(struct vma_tree *t, struct vm_area_struct *v)
{
	int rc = vma_tree_insert(t, v);

	CHECK_MSG(rc == 0, "insert [%#llx, %#llx): %d", (unsigned long long)v->vm_start,
		  (unsigned long long)v->vm_end, rc);
}

/*
 * Insert @v expecting -EEXIST.  Should it go in, take it out again: the
 * caller reuses the node, and a node linked twice would make later steps
 * loop instead of fail.
 */
static void insert_refused(struct vma_tree *t, struct vm_area_struct *v, const char *what)
{
	uint64_t s = v->vm_start, e = v->vm_end;
	int rc = vma_tree_insert(t, v);

	CHECK_MSG(rc == -EEXIST, "insert [%#llx, %#llx) (%s): %d, want -EEXIST",
		  (unsigned long long)s, (unsigned long long)e, what, rc);
	if (rc == 0)
		vma_tree_erase(t, v);
}

/* Walk @t both ways and compare with @want[0..n), the expected order. */
static void check_order(const struct vma_tree *t, struct vm_area_struct *const *want, size_t n)
{
	struct vm_area_struct *v;
	size_t i;

	CHECK_EQ(t->count, n);
	for (i = 0, v = vma_first(t); v && i < n; v = vma_next(v), i++)
		CHECK_MSG(v == want[i], "forward walk: position %zu", i);
	CHECK_MSG(i == n && !v, "forward walk: %zu nodes, want %zu", i, n);
	for (i = n, v = vma_last(t); v && i > 0; v = vma_prev(v), i--)
		CHECK_MSG(v == want[i - 1], "backward walk: position %zu", i - 1);
	CHECK_MSG(i == 0 && !v, "backward walk: %zu nodes short", i);
}

/* The fewest nodes an AVL tree of height @h can have (a Fibonacci tree). */
static uint64_t avl_min_nodes(int h)
{
	uint64_t a = 0, b = 1;	/* heights 0 and 1 */

	if (h == 0)
		return 0;
	for (int k = 1; k < h; k++) {
		uint64_t c = a + b + 1;

		a = b;
		b = c;
	}
	return b;
}

/* ---------------------------------------------------------------- units */

static void t_empty(void)
{
	struct vma_tree t;
	const uint64_t addrs[] = { 0, 1, PG, UINT64_MAX / 2, UINT64_MAX };

	vma_tree_init(&t);
	CHECK(t.root == NULL);
	CHECK_EQ(t.count, 0);
	check_tree(&t);
	CHECK(vma_first(&t) == NULL);
	CHECK(vma_last(&t) == NULL);
	for (size_t i = 0; i < sizeof(addrs) / sizeof(addrs[0]); i++) {
		CHECK(vma_find(&t, addrs[i]) == NULL);
		CHECK(vma_lookup(&t, addrs[i]) == NULL);
	}
}

static void t_single(void)
{
	struct vma_tree t;
	struct vm_area_struct *v = pages(0, 1, 2);	/* [0x1000, 0x3000) */

	vma_tree_init(&t);
	insert_ok(&t, v);
	check_tree(&t);
	CHECK(t.root == v);
	CHECK_EQ(t.count, 1);
	CHECK_EQ(v->vt_height, 1);
	CHECK(v->vt_parent == NULL);
	CHECK(vma_first(&t) == v);
	CHECK(vma_last(&t) == v);
	CHECK(vma_next(v) == NULL);
	CHECK(vma_prev(v) == NULL);

	CHECK(vma_find(&t, 0) == v);
	CHECK(vma_find(&t, 0xfff) == v);
	CHECK(vma_find(&t, 0x1000) == v);
	CHECK(vma_find(&t, 0x2fff) == v);
	CHECK(vma_find(&t, 0x3000) == NULL);
	CHECK(vma_find(&t, UINT64_MAX) == NULL);
	CHECK(vma_lookup(&t, 0) == NULL);
	CHECK(vma_lookup(&t, 0xfff) == NULL);
	CHECK(vma_lookup(&t, 0x1000) == v);
	CHECK(vma_lookup(&t, 0x2fff) == v);
	CHECK(vma_lookup(&t, 0x3000) == NULL);

	vma_tree_erase(&t, v);
	check_tree(&t);
	CHECK(t.root == NULL);
	CHECK_EQ(t.count, 0);
	CHECK(vma_find(&t, 0) == NULL);
	CHECK(vma_first(&t) == NULL);

	/* An erased node goes back in like a fresh one. */
	insert_ok(&t, v);
	check_tree(&t);
	CHECK(vma_lookup(&t, 0x1000) == v);
}

/* Bounds at the top of the address space, where end - 1 is the last byte. */
static void t_extreme_addresses(void)
{
	struct vma_tree t;
	struct vm_area_struct *lo = node(0, 0, PG);
	struct vm_area_struct *hi = node(1, UINT64_MAX - PG, UINT64_MAX);

	vma_tree_init(&t);
	insert_ok(&t, hi);
	insert_ok(&t, lo);
	check_tree(&t);
	CHECK(vma_find(&t, 0) == lo);
	CHECK(vma_lookup(&t, 0) == lo);
	CHECK(vma_find(&t, PG) == hi);
	CHECK(vma_lookup(&t, PG) == NULL);
	CHECK(vma_lookup(&t, UINT64_MAX - 1) == hi);
	CHECK(vma_find(&t, UINT64_MAX - 1) == hi);
	CHECK(vma_find(&t, UINT64_MAX) == NULL);
	CHECK(vma_lookup(&t, UINT64_MAX) == NULL);
}

/* Empty and inverted intervals have no place in the order: refused, nothing changed. */
static void t_insert_rejects_bad_bounds(void)
{
	struct vma_tree t;
	struct vm_area_struct *a = pages(0, 10, 1);

	vma_tree_init(&t);
	insert_ok(&t, a);
	CHECK_EQ(vma_tree_insert(&t, node(1, 20 * PG, 20 * PG)), -EINVAL);
	CHECK_EQ(vma_tree_insert(&t, node(2, 30 * PG, 29 * PG)), -EINVAL);
	CHECK_EQ(vma_tree_insert(&t, node(3, 0, 0)), -EINVAL);
	CHECK_EQ(t.count, 1);
	CHECK(t.root == a);
	check_tree(&t);
}

/* [a, b) and [b, c) share no byte: both go in, in either order. */
static void t_adjacent_touching(void)
{
	for (int order = 0; order < 6; order++) {
		static const int perms[6][3] = {
			{ 0, 1, 2 }, { 0, 2, 1 }, { 1, 0, 2 }, { 1, 2, 0 }, { 2, 0, 1 }, { 2, 1, 0 },
		};
		struct vm_area_struct *v[3];
		struct vma_tree t;

		v[0] = pages(0, 1, 1);	/* [1, 2) [2, 4) [4, 5) pages: no gaps */
		v[1] = pages(1, 2, 2);
		v[2] = pages(2, 4, 1);
		vma_tree_init(&t);
		for (int k = 0; k < 3; k++)
			insert_ok(&t, v[perms[order][k]]);
		check_tree(&t);
		check_order(&t, v, 3);

		CHECK(vma_find(&t, 2 * PG - 1) == v[0]);
		CHECK(vma_find(&t, 2 * PG) == v[1]);
		CHECK(vma_lookup(&t, 2 * PG) == v[1]);
		CHECK(vma_lookup(&t, 4 * PG - 1) == v[1]);
		CHECK(vma_lookup(&t, 4 * PG) == v[2]);
		CHECK(vma_find(&t, 5 * PG) == NULL);
	}
}

/* Every way of overlapping one VMA, with and without neighbours about it. */
static void t_overlap_rejected(void)
{
	struct vma_tree t;
	struct vm_area_struct *left = pages(0, 4, 4);	/* [4, 8) */
	struct vm_area_struct *mid = pages(1, 16, 16);	/* [16, 32) */
	struct vm_area_struct *right = pages(2, 40, 4);	/* [40, 44) */
	struct vm_area_struct *want[3] = { left, mid, right };
	static const struct { uint64_t s, e; const char *what; } bad[] = {
		{ 15, 17, "over mid's start (mid is the successor)" },
		{ 31, 33, "over mid's end (mid is the predecessor)" },
		{ 20, 24, "inside mid" },
		{ 16, 32, "exactly mid" },
		{ 16, 17, "same start, shorter" },
		{ 31, 32, "same end, shorter" },
		{ 12, 36, "containing mid" },
		{ 16, 36, "same start, longer" },
		{ 12, 32, "same end, longer" },
		{ 7, 17, "bridging left and mid" },
		{ 0, 100, "containing everything" },
		{ 0, 5, "below everything, into left" },
		{ 43, 100, "from inside right to above everything" },
	};
	static const struct { uint64_t s, e; } good[] = {
		{ 0, 4 }, { 8, 16 }, { 32, 40 }, { 44, 100 },
	};

	vma_tree_init(&t);
	insert_ok(&t, mid);
	insert_ok(&t, left);
	insert_ok(&t, right);
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		struct vm_area_struct *v = node(3, bad[i].s * PG, bad[i].e * PG);

		/* A refused node must come back untouched: poison its links. */
		v->vt_left = v->vt_right = v->vt_parent = v;
		v->vt_height = -7;
		insert_refused(&t, v, bad[i].what);
		CHECK(v->vt_left == v && v->vt_right == v && v->vt_parent == v);
		CHECK_EQ(v->vt_height, -7);
		check_order(&t, want, 3);
	}
	check_tree(&t);

	/* Exactly filling each gap is fine. */
	for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++)
		insert_ok(&t, node(4 + (int)i, good[i].s * PG, good[i].e * PG));
	check_tree(&t);
	CHECK_EQ(t.count, 7);
	/* And now there is no room left anywhere in [0, 100) pages. */
	for (uint64_t p = 0; p < 100; p++)
		insert_refused(&t, pages(20, p, 1), "no room left");
	CHECK_EQ(t.count, 7);
}

/* An overlap with a node deep in a big tree is found on either side. */
static void t_overlap_rejected_deep(void)
{
	enum { N = 255 };
	struct vma_tree t;

	vma_tree_init(&t);
	for (int i = 0; i < N; i++)
		insert_ok(&t, pages(i, 4 * (uint64_t)i, 2));	/* [4i, 4i + 2) */
	check_tree(&t);
	for (int i = 0; i < N; i++) {
		uint64_t s = 4 * (uint64_t)i;

		insert_refused(&t, pages(N, s + 1, 2), "over the end");
		if (i > 0)
			insert_refused(&t, pages(N, s - 1, 2), "over the start");
		insert_refused(&t, pages(N, s, 1), "same start");
	}
	CHECK_EQ(t.count, N);
	check_tree(&t);
	/* The gaps [4i + 2, 4i + 4) take exactly one page-pair each. */
	for (int i = 0; i < N; i++)
		insert_ok(&t, pages(N + i, 4 * (uint64_t)i + 2, 2));
	CHECK_EQ(t.count, 2 * N);
	check_tree(&t);
}

/* Pages [2k + 1, 2k + 2) for k < n: one page each, one-page gaps, none below page 1. */
static void build_gapped(struct vma_tree *t, struct vm_area_struct **v, int n, uint64_t *seed)
{
	int *idx = malloc((size_t)n * sizeof(*idx));

	if (!idx)
		exit(2);
	for (int i = 0; i < n; i++)
		idx[i] = i;
	for (int i = n - 1; i > 0; i--) {	/* insert in a random order */
		int j = (int)(tu_rand(seed) % (uint64_t)(i + 1)), x = idx[i];

		idx[i] = idx[j];
		idx[j] = x;
	}
	vma_tree_init(t);
	for (int i = 0; i < n; i++)
		v[i] = pages(i, 2 * (uint64_t)i + 1, 1);
	for (int i = 0; i < n; i++)
		insert_ok(t, v[idx[i]]);
	free(idx);
}

static void t_find_boundaries(void)
{
	enum { N = 300 };
	static struct vm_area_struct *v[N];
	struct vma_tree t;
	uint64_t seed = 0x5eed0001;

	build_gapped(&t, v, N, &seed);
	check_tree(&t);

	/* Below the first. */
	CHECK(vma_find(&t, 0) == v[0]);
	CHECK(vma_find(&t, PG - 1) == v[0]);
	CHECK(vma_lookup(&t, 0) == NULL);
	CHECK(vma_lookup(&t, PG - 1) == NULL);
	for (int i = 0; i < N; i++) {
		struct vm_area_struct *next = i + 1 < N ? v[i + 1] : NULL;
		uint64_t s = v[i]->vm_start, e = v[i]->vm_end;

		CHECK(vma_find(&t, s) == v[i]);
		CHECK(vma_find(&t, s + 1) == v[i]);
		CHECK(vma_find(&t, e - 1) == v[i]);
		CHECK(vma_find(&t, e) == next);		/* start of the gap after */
		CHECK(vma_find(&t, e + PG / 2) == next);	/* middle of the gap */
		CHECK(vma_find(&t, e + PG - 1) == next);	/* end of the gap */
		CHECK(vma_lookup(&t, s) == v[i]);
		CHECK(vma_lookup(&t, e - 1) == v[i]);
		CHECK(vma_lookup(&t, e) == NULL);
		CHECK(vma_lookup(&t, e + PG - 1) == NULL);
		CHECK(vma_lookup(&t, s - 1) == NULL);
	}
	/* Above the last. */
	CHECK(vma_find(&t, v[N - 1]->vm_end) == NULL);
	CHECK(vma_find(&t, UINT64_MAX) == NULL);
	CHECK(vma_lookup(&t, UINT64_MAX) == NULL);
}

static void t_next_prev_walk(void)
{
	enum { N = 1000 };
	static struct vm_area_struct *v[N];
	struct vma_tree t;
	uint64_t seed = 0x5eed0002;

	build_gapped(&t, v, N, &seed);
	check_tree(&t);
	CHECK(vma_first(&t) == v[0]);
	CHECK(vma_last(&t) == v[N - 1]);
	CHECK(vma_prev(v[0]) == NULL);
	CHECK(vma_next(v[N - 1]) == NULL);
	for (int i = 0; i < N; i++) {
		CHECK(vma_next(v[i]) == (i + 1 < N ? v[i + 1] : NULL));
		CHECK(vma_prev(v[i]) == (i > 0 ? v[i - 1] : NULL));
	}
	check_order(&t, v, N);
}

/* Seven nodes inserted 4 2 6 1 3 5 7 make the perfect tree rooted at 4. */
static void build_perfect7(struct vma_tree *t, struct vm_area_struct **v)
{
	static const int order[7] = { 3, 1, 5, 0, 2, 4, 6 };

	vma_tree_init(t);
	for (int i = 0; i < 7; i++)
		v[i] = pages(i, 10 * (uint64_t)(i + 1), 5);
	for (int i = 0; i < 7; i++)
		insert_ok(t, v[order[i]]);
}

/* @v[0..n) without @v[gone]. */
static void check_order_without(const struct vma_tree *t, struct vm_area_struct **v, int n,
				int gone)
{
	struct vm_area_struct *want[16];
	int k = 0;

	for (int i = 0; i < n; i++)
		if (i != gone)
			want[k++] = v[i];
	check_order(t, want, (size_t)k);
}

static void t_erase_leaf(void)
{
	struct vm_area_struct *v[7];
	struct vma_tree t;

	build_perfect7(&t, v);
	CHECK(t.root == v[3]);
	CHECK_EQ(t.root->vt_height, 3);
	vma_tree_erase(&t, v[0]);
	check_tree(&t);
	check_order_without(&t, v, 7, 0);
	CHECK(v[1]->vt_left == NULL);
	CHECK(vma_lookup(&t, v[0]->vm_start) == NULL);
	CHECK(vma_find(&t, v[0]->vm_start) == v[1]);
	/* The erased node keeps no links into the tree. */
	CHECK(!v[0]->vt_left && !v[0]->vt_right && !v[0]->vt_parent);
}

static void t_erase_root_two_children(void)
{
	struct vm_area_struct *v[7];
	struct vma_tree t;

	/* The successor (5) is the leftmost of the right subtree, not the right child. */
	build_perfect7(&t, v);
	vma_tree_erase(&t, v[3]);
	check_tree(&t);
	check_order_without(&t, v, 7, 3);
	CHECK(t.root != v[3]);
	CHECK(vma_lookup(&t, v[3]->vm_start) == NULL);
	CHECK(vma_find(&t, v[3]->vm_start) == v[4]);

	/* Keep erasing the root until the tree is empty. */
	for (size_t left = t.count; left > 0; left--) {
		vma_tree_erase(&t, t.root);
		check_tree(&t);
		CHECK_EQ(t.count, left - 1);
	}
	CHECK(t.root == NULL);
}

static void t_erase_inner_two_children(void)
{
	struct vm_area_struct *v[7];
	struct vma_tree t;

	/* Node 2 (v[1]): children 1 and 3; its successor is its right child, a leaf. */
	build_perfect7(&t, v);
	vma_tree_erase(&t, v[1]);
	check_tree(&t);
	check_order_without(&t, v, 7, 1);
	CHECK(t.root == v[3]);
	CHECK(v[3]->vt_left == v[2]);
	CHECK(v[2]->vt_left == v[0]);

	/* Node 6 (v[5]), same on the right. */
	build_perfect7(&t, v);
	vma_tree_erase(&t, v[5]);
	check_tree(&t);
	check_order_without(&t, v, 7, 5);
}

static void t_erase_one_child(void)
{
	struct vm_area_struct *v[7];
	struct vma_tree t;

	build_perfect7(&t, v);
	vma_tree_erase(&t, v[0]);	/* now 2 has only a right child, 3 */
	vma_tree_erase(&t, v[1]);
	check_tree(&t);
	CHECK(v[3]->vt_left == v[2]);
	CHECK(v[2]->vt_parent == v[3]);
	{
		struct vm_area_struct *want[5] = { v[2], v[3], v[4], v[5], v[6] };

		check_order(&t, want, 5);
	}
}

/* Every node of bigger trees, erased from a fresh copy: every erase shape. */
static void t_erase_each_position(void)
{
	for (int n = 1; n <= 40; n++) {
		for (int gone = 0; gone < n; gone++) {
			struct vm_area_struct *v[40];
			struct vma_tree t;
			uint64_t seed = 0x5eed0100 + (uint64_t)n;

			build_gapped(&t, v, n, &seed);
			vma_tree_erase(&t, v[gone]);
			check_tree(&t);
			if (n <= 16)
				check_order_without(&t, v, n, gone);
			CHECK_EQ(t.count, (size_t)n - 1);
		}
	}
}

/*
 * Sorted inserts are the worst case for an unbalanced tree.  Here the height
 * must stay within the AVL bound, through the inserts and through erases
 * from either end (which strip one side and force cascades of rotations).
 */
static void t_sorted_inserts_and_erases(void)
{
	enum { N = 1023 };
	struct vma_tree t;

	for (int pass = 0; pass < 4; pass++) {
		bool descending_insert = pass & 1, descending_erase = pass & 2;

		vma_tree_init(&t);
		for (int i = 0; i < N; i++) {
			int k = descending_insert ? N - 1 - i : i;

			insert_ok(&t, pages(k, 2 * (uint64_t)k, 1));
			check_tree(&t);
			CHECK(avl_min_nodes(t.root->vt_height) <= t.count);
		}
		/* 2^10 - 1 nodes inserted in order make a perfect tree of height 10. */
		CHECK_EQ(t.root->vt_height, 10);
		for (int i = 0; i < N; i++) {
			int k = descending_erase ? N - 1 - i : i;

			vma_tree_erase(&t, &pool[k]);
			check_tree(&t);
			CHECK(t.count == 0 || avl_min_nodes(t.root->vt_height) <= t.count);
		}
		CHECK(t.root == NULL);
	}
}

/* A writer moves bounds in place (split, merge, brk) without touching the tree. */
static void t_bounds_moved_in_place(void)
{
	enum { N = 50 };
	static struct vm_area_struct *v[N];
	struct vma_tree t;
	uint64_t seed = 0x5eed0003;

	build_gapped(&t, v, N, &seed);
	/* Grow v[10] up to v[11] (brk): now they touch. */
	v[10]->vm_end = v[11]->vm_start;
	check_tree(&t);
	CHECK(vma_lookup(&t, v[11]->vm_start - 1) == v[10]);
	CHECK(vma_find(&t, v[10]->vm_end) == v[11]);
	/* Grow v[20] down to v[19]'s end. */
	v[20]->vm_start = v[19]->vm_end;
	check_tree(&t);
	CHECK(vma_lookup(&t, v[19]->vm_end) == v[20]);
	/* Shrink v[30] to its first half (the front of a split). */
	v[30]->vm_end = v[30]->vm_start + PG / 2;
	check_tree(&t);
	CHECK(vma_lookup(&t, v[30]->vm_end) == NULL);
	CHECK(vma_find(&t, v[30]->vm_end) == v[31]);
	/* ...and put the back half in as its own VMA. */
	insert_ok(&t, node(N, v[30]->vm_end, v[30]->vm_start + PG));
	check_tree(&t);
	CHECK(vma_lookup(&t, v[30]->vm_end) == &pool[N]);
	CHECK(vma_next(v[30]) == &pool[N]);
	CHECK(vma_next(&pool[N]) == v[31]);
	/* Merge back: erase the back half, regrow the front. */
	vma_tree_erase(&t, &pool[N]);
	v[30]->vm_end = v[30]->vm_start + PG;
	check_tree(&t);
	check_order(&t, v, N);
}

/* Each kind of damage is reported, with a reason, and undoing it passes again. */
static void t_check_detects_corruption(void)
{
	enum { N = 31 };
	static struct vm_area_struct *v[N];
	struct vm_area_struct *r, *a, *b;
	struct vma_tree t;
	uint64_t seed = 0x5eed0004, save;
	const char *why;
	int h;

#define EXPECT_BROKEN(what)                                                          \
	do {                                                                         \
		why = NULL;                                                          \
		CHECK_MSG(vma_tree_check(&t, &why) == -EINVAL, "not detected: %s", what); \
		CHECK_MSG(why != NULL && why[0] != '\0', "no reason given: %s", what); \
		CHECK_EQ(vma_tree_check(&t, NULL), -EINVAL);                        \
	} while (0)

	build_gapped(&t, v, N, &seed);
	check_tree(&t);
	r = t.root;

	h = r->vt_height;
	r->vt_height = h + 1;
	EXPECT_BROKEN("root height off by one");
	r->vt_height = h;
	check_tree(&t);

	a = vma_first(&t);
	h = a->vt_height;
	a->vt_height = 0;
	EXPECT_BROKEN("leaf height 0");
	a->vt_height = h;

	a = r->vt_left;
	a->vt_parent = r->vt_right;
	EXPECT_BROKEN("wrong parent link");
	a->vt_parent = r;

	r->vt_parent = r->vt_left;
	EXPECT_BROKEN("root with a parent");
	r->vt_parent = NULL;

	/* Neighbours overlapping: v[5] grows one byte into v[6]. */
	save = v[5]->vm_end;
	v[5]->vm_end = v[6]->vm_start + 1;
	EXPECT_BROKEN("overlap");
	v[5]->vm_end = save;

	/* Out of order: v[7] moved past v[8]. */
	save = v[7]->vm_start;
	v[7]->vm_start = v[8]->vm_start + 1;
	v[7]->vm_end += 3 * PG;
	EXPECT_BROKEN("out of order");
	v[7]->vm_start = save;
	v[7]->vm_end -= 3 * PG;

	save = v[9]->vm_end;
	v[9]->vm_end = v[9]->vm_start;
	EXPECT_BROKEN("empty VMA");
	v[9]->vm_end = save;

	t.count++;
	EXPECT_BROKEN("count too high");
	t.count -= 2;
	EXPECT_BROKEN("count too low");
	t.count++;

	/* A cycle: a leaf's child is the root (caught without looping forever). */
	a = vma_first(&t);
	a->vt_left = r;
	EXPECT_BROKEN("cycle");
	a->vt_left = NULL;
	check_tree(&t);

	/* Unbalanced but with honest heights: the chain 1 -> 2 -> 3 to the right. */
	vma_tree_init(&t);
	a = pages(0, 1, 1);
	b = pages(1, 3, 1);
	r = pages(2, 5, 1);
	t.root = a;
	t.count = 3;
	a->vt_right = b;
	b->vt_parent = a;
	b->vt_right = r;
	r->vt_parent = b;
	r->vt_height = 1;
	b->vt_height = 2;
	a->vt_height = 3;
	EXPECT_BROKEN("balance factor -2");

	/*
	 * A left chain far deeper than any AVL tree, links consistent: the
	 * checker's depth bound ends the walk before its own stack suffers.
	 */
	vma_tree_init(&t);
	for (int i = 0; i < 1000; i++) {
		a = pages(i, 2 * (uint64_t)i + 2, 1);
		a->vt_height = i + 1;
		a->vt_left = i > 0 ? &pool[i - 1] : NULL;
		if (i > 0)
			pool[i - 1].vt_parent = a;
	}
	t.root = &pool[999];
	t.count = 1000;
	EXPECT_BROKEN("chain 1000 deep");
#undef EXPECT_BROKEN
}

/* --------------------------------------------------------- model test */

/*
 * A sorted array of the tree's VMAs is the model.  Each step inserts a
 * random interval (the model says whether it overlaps), erases a random
 * VMA, or moves a VMA's bounds within the room its neighbours leave; then
 * vma_tree_check() runs and lookups at random and boundary addresses are
 * compared with the model's answers.  The tree grows and shrinks in waves
 * so that both insert-heavy and erase-heavy shapes occur.
 */
#define MODEL_STEPS 30000
#define MODEL_SPACE 16384	/* pages in the address space used */
#define MODEL_MAX 1000		/* nodes in the tree at most */

struct model {
	struct vm_area_struct *v[MODEL_MAX];
	int n;
};

/* Index of the first VMA with vm_end > addr (n if none). */
static int model_find(const struct model *m, uint64_t addr)
{
	int lo = 0, hi = m->n;

	while (lo < hi) {
		int mid = lo + (hi - lo) / 2;

		if (m->v[mid]->vm_end > addr)
			hi = mid;
		else
			lo = mid + 1;
	}
	return lo;
}

static void model_compare(const struct vma_tree *t, const struct model *m, uint64_t addr)
{
	int i = model_find(m, addr);
	struct vm_area_struct *want = i < m->n ? m->v[i] : NULL;
	struct vm_area_struct *want_in = want && want->vm_start <= addr ? want : NULL;

	CHECK_MSG(vma_find(t, addr) == want, "vma_find(%#llx) disagrees with the model",
		  (unsigned long long)addr);
	CHECK_MSG(vma_lookup(t, addr) == want_in, "vma_lookup(%#llx) disagrees with the model",
		  (unsigned long long)addr);
}

static void t_random_model(void)
{
	static struct model m;
	static struct vm_area_struct *free_nodes[MODEL_MAX];
	uint64_t seed = 0x9e3779b97f4a7c15ull;
	struct vma_tree t;
	int nfree = 0, fails_before = atomic_load(&tu_test_failures);
	long inserts = 0, refused = 0, erases = 0, moves = 0;
	int most = 0;

	vma_tree_init(&t);
	m.n = 0;
	for (int i = 0; i < MODEL_MAX; i++)
		free_nodes[nfree++] = node(i, 0, 0);

	for (int step = 0; step < MODEL_STEPS; step++) {
		/* Waves of 3000 steps: growing (75% inserts), then shrinking (25%). */
		bool growing = (step / 3000) % 2 == 0;
		uint64_t r = tu_rand(&seed) % 100;
		int op = r < (growing ? 75u : 25u) ? 0 : r < 88 ? 1 : 2;
		const char *why;

		if (m.n == 0 || (op != 0 && m.n < 2))
			op = 0;
		if (op == 0 && nfree == 0)
			op = 1;

		if (op == 0) {
			struct vm_area_struct *v = free_nodes[nfree - 1];
			uint64_t s = tu_rand(&seed) % MODEL_SPACE;
			uint64_t len = 1 + tu_rand(&seed) % 4;
			int i, rc;
			bool overlaps;

			/* Sometimes sub-page bounds: the tree must not care about pages. */
			v->vm_start = s * PG + (tu_rand(&seed) % 4 == 0 ? tu_rand(&seed) % PG : 0);
			v->vm_end = (s + len) * PG;
			i = model_find(&m, v->vm_start);	/* first with vm_end > start */
			overlaps = i < m.n && m.v[i]->vm_start < v->vm_end;
			rc = vma_tree_insert(&t, v);
			CHECK_MSG(rc == (overlaps ? -EEXIST : 0),
				  "step %d: insert [%#llx, %#llx): %d, model says %s", step,
				  (unsigned long long)v->vm_start, (unsigned long long)v->vm_end,
				  rc, overlaps ? "overlap" : "free");
			if (rc == 0) {
				memmove(&m.v[i + 1], &m.v[i], (size_t)(m.n - i) * sizeof(m.v[0]));
				m.v[i] = v;
				m.n++;
				nfree--;
				inserts++;
			} else {
				refused++;
			}
		} else if (op == 1) {
			int i = (int)(tu_rand(&seed) % (uint64_t)m.n);

			vma_tree_erase(&t, m.v[i]);
			free_nodes[nfree++] = m.v[i];
			memmove(&m.v[i], &m.v[i + 1], (size_t)(m.n - i - 1) * sizeof(m.v[0]));
			m.n--;
			erases++;
		} else {
			/* New bounds anywhere in [prev end, next start), still non-empty. */
			int i = (int)(tu_rand(&seed) % (uint64_t)m.n);
			struct vm_area_struct *v = m.v[i];
			uint64_t lo = i > 0 ? m.v[i - 1]->vm_end : 0;
			uint64_t hi = i + 1 < m.n ? m.v[i + 1]->vm_start : MODEL_SPACE * PG + 8 * PG;
			uint64_t room = hi - lo;	/* >= 1: v itself fits */
			uint64_t a = lo + tu_rand(&seed) % room, b = lo + tu_rand(&seed) % room;

			if (a > b) {
				uint64_t x = a;

				a = b;
				b = x;
			}
			/* Often snap to a neighbour, to make touching VMAs common. */
			if (tu_rand(&seed) % 3 == 0)
				a = lo;
			if (tu_rand(&seed) % 3 == 0)
				b = hi - 1;
			v->vm_start = a;
			v->vm_end = b + 1;
			moves++;
		}

		why = NULL;
		if (vma_tree_check(&t, &why) != 0) {
			CHECK_MSG(0, "step %d (op %d): vma_tree_check: %s", step, op, why);
			break;
		}
		CHECK_EQ(t.count, m.n);
		if (m.n > most)
			most = m.n;

		/* Lookups: a few random addresses, and the bounds of a random VMA. */
		for (int k = 0; k < 4; k++)
			model_compare(&t, &m, tu_rand(&seed) % ((MODEL_SPACE + 16) * PG));
		if (m.n) {
			struct vm_area_struct *v = m.v[tu_rand(&seed) % (uint64_t)m.n];

			model_compare(&t, &m, v->vm_start);
			model_compare(&t, &m, v->vm_end - 1);
			model_compare(&t, &m, v->vm_end);
			if (v->vm_start)
				model_compare(&t, &m, v->vm_start - 1);
		}
		/* The whole order, both ways, now and then (O(n)). */
		if (step % 64 == 0)
			check_order(&t, m.v, (size_t)m.n);
		if (atomic_load(&tu_test_failures) != fails_before) {
			fprintf(stderr, "  stopping at step %d (seed %#llx)\n", step,
				(unsigned long long)0x9e3779b97f4a7c15ull);
			break;
		}
	}
	check_order(&t, m.v, (size_t)m.n);
	printf("     %d steps: %ld inserts, %ld refused as overlapping, %ld erases, %ld moves, "
	       "%d left, %d at most\n", MODEL_STEPS, inserts, refused, erases, moves, m.n, most);
	/* The waves must actually have exercised the cases. */
	CHECK(inserts > 1000 && refused > 100 && erases > 1000 && moves > 500 && most > 500);
}

static const struct tu_test tests[] = {
	TU_TEST(t_empty),
	TU_TEST(t_single),
	TU_TEST(t_extreme_addresses),
	TU_TEST(t_insert_rejects_bad_bounds),
	TU_TEST(t_adjacent_touching),
	TU_TEST(t_overlap_rejected),
	TU_TEST(t_overlap_rejected_deep),
	TU_TEST(t_find_boundaries),
	TU_TEST(t_next_prev_walk),
	TU_TEST(t_erase_leaf),
	TU_TEST(t_erase_root_two_children),
	TU_TEST(t_erase_inner_two_children),
	TU_TEST(t_erase_one_child),
	TU_TEST(t_erase_each_position),
	TU_TEST(t_sorted_inserts_and_erases),
	TU_TEST(t_bounds_moved_in_place),
	TU_TEST(t_check_detects_corruption),
	TU_TEST(t_random_model),
};

int main(int argc, char **argv)
{
	return tu_run("test_vma", tests, (int)(sizeof(tests) / sizeof(tests[0])), argc, argv,
		      NULL);
}
