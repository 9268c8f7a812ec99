/* SPDX-License-Identifier: MIT */
/*
 * vma.c - the ordered set of an mm's VMAs: an intrusive AVL tree keyed by
 * vm_start (the interface and its locking rules are in vma.h).
 *
 * Why AVL: lookups (page faults, find_vma) outnumber changes (mmap, munmap)
 * by far, and an AVL tree is the shallowest of the simple balanced trees
 * (height < 1.44 log2(n + 2)), so a descent touches the fewest nodes.
 *
 * The intervals never overlap, so the nodes are sorted by vm_end as well as
 * by vm_start; that is what lets vma_find() descend on vm_end although the
 * tree is keyed by vm_start.
 *
 * vt_height is the height of the subtree rooted at the node: 1 for a leaf,
 * and an absent child counts 0.  Parent links make in-order stepping O(1)
 * amortised and let erase rebalance upwards without a path stack.
 */
#include <errno.h>
#include <stdbool.h>
#include <stddef.h>

#include "vma.h"

/*
 * The deepest subtree vma_tree_check() will walk.  A valid AVL tree of even
 * 2^64 nodes is less than 93 deep; anything deeper is a corruption (a cycle,
 * a degenerate chain), and stopping bounds the checker's recursion.
 */
#define VMA_CHECK_MAX_DEPTH 128

static inline int height(const struct vm_area_struct *n)
{
	return n ? n->vt_height : 0;
}

static inline int max_int(int a, int b)
{
	return a > b ? a : b;
}

static inline void update_height(struct vm_area_struct *n)
{
	n->vt_height = 1 + max_int(height(n->vt_left), height(n->vt_right));
}

static inline int balance(const struct vm_area_struct *n)
{
	return height(n->vt_left) - height(n->vt_right);
}

/* Point whatever pointed at @old (its parent's link, or the root) at @new. */
static void replace_child(struct vma_tree *t, struct vm_area_struct *parent,
			  struct vm_area_struct *old, struct vm_area_struct *new)
{
	if (!parent)
		t->root = new;
	else if (parent->vt_left == old)
		parent->vt_left = new;
	else
		parent->vt_right = new;
}

static struct vm_area_struct *leftmost(struct vm_area_struct *n)
{
	while (n->vt_left)
		n = n->vt_left;
	return n;
}

static struct vm_area_struct *rightmost(struct vm_area_struct *n)
{
	while (n->vt_right)
		n = n->vt_right;
	return n;
}

/*
 * Rotations: @x's child takes @x's place and @x becomes its child; the
 * child's inner subtree moves across to @x.  Returns the subtree's new root.
 * Heights are fixed bottom-up (@x first, it is now the lower one).
 */
static struct vm_area_struct *rotate_left(struct vma_tree *t, struct vm_area_struct *x)
{
	struct vm_area_struct *y = x->vt_right;

	x->vt_right = y->vt_left;
	if (y->vt_left)
		y->vt_left->vt_parent = x;
	y->vt_parent = x->vt_parent;
	replace_child(t, x->vt_parent, x, y);
	y->vt_left = x;
	x->vt_parent = y;
	update_height(x);
	update_height(y);
	return y;
}

static struct vm_area_struct *rotate_right(struct vma_tree *t, struct vm_area_struct *x)
{
	struct vm_area_struct *y = x->vt_left;

	x->vt_left = y->vt_right;
	if (y->vt_right)
		y->vt_right->vt_parent = x;
	y->vt_parent = x->vt_parent;
	replace_child(t, x->vt_parent, x, y);
	y->vt_right = x;
	x->vt_parent = y;
	update_height(x);
	update_height(y);
	return y;
}

/*
 * Restore the AVL property at @n, whose children are balanced but may differ
 * in height by 2.  Returns the root of the subtree that @n was the root of.
 */
static struct vm_area_struct *fix_node(struct vma_tree *t, struct vm_area_struct *n)
{
	int b;

	update_height(n);
	b = balance(n);
	if (b > 1) {
		/* Left-right case: straighten the kink first, or one rotation won't do. */
		if (balance(n->vt_left) < 0)
			rotate_left(t, n->vt_left);
		return rotate_right(t, n);
	}
	if (b < -1) {
		if (balance(n->vt_right) > 0)
			rotate_right(t, n->vt_right);
		return rotate_left(t, n);
	}
	return n;
}

/*
 * Walk up from @n, the lowest node whose subtree changed, fixing heights
 * and balance.  Once a subtree comes out as tall as it was before, nothing
 * above it can have changed, so the walk stops there: an insert does at
 * most one (single or double) rotation, an erase O(log n) in the worst case.
 */
static void rebalance(struct vma_tree *t, struct vm_area_struct *n)
{
	while (n) {
		int old = n->vt_height;

		n = fix_node(t, n);
		if (n->vt_height == old)
			return;
		n = n->vt_parent;
	}
}

void vma_tree_init(struct vma_tree *t)
{
	t->root = NULL;
	t->count = 0;
}

int vma_tree_insert(struct vma_tree *t, struct vm_area_struct *v)
{
	struct vm_area_struct *parent = NULL, *pred = NULL, *succ = NULL;
	struct vm_area_struct *_Atomic *link = &t->root;

	/* An empty or inverted interval would break the order vma_find() relies on. */
	if (v->vm_start >= v->vm_end)
		return -EINVAL;

	/*
	 * Descend to the leaf position, remembering the last node we passed on
	 * either side: those are the new node's in-order neighbours, the only
	 * VMAs it could overlap (every other one lies beyond one of them).
	 */
	while (*link) {
		parent = *link;
		if (v->vm_start < parent->vm_start) {
			succ = parent;
			link = &parent->vt_left;
		} else {
			pred = parent;	/* includes an equal vm_start: caught just below */
			link = &parent->vt_right;
		}
	}
	if ((pred && pred->vm_end > v->vm_start) || (succ && succ->vm_start < v->vm_end))
		return -EEXIST;

	v->vt_left = v->vt_right = NULL;
	v->vt_parent = parent;
	v->vt_height = 1;
	*link = v;
	t->count++;
	rebalance(t, parent);
	return 0;
}

void vma_tree_erase(struct vma_tree *t, struct vm_area_struct *v)
{
	struct vm_area_struct *parent = v->vt_parent;
	struct vm_area_struct *start;	/* lowest node whose subtree lost a node */

	if (v->vt_left && v->vt_right) {
		/*
		 * Two children: @v's successor (the leftmost node on its right,
		 * which has no left child) is unlinked from its own spot and takes
		 * @v's place, links and height, which keeps the order.
		 */
		struct vm_area_struct *s = leftmost(v->vt_right);

		if (s == v->vt_right) {
			start = s;
		} else {
			start = s->vt_parent;
			start->vt_left = s->vt_right;
			if (s->vt_right)
				s->vt_right->vt_parent = start;
			s->vt_right = v->vt_right;
			v->vt_right->vt_parent = s;
		}
		s->vt_left = v->vt_left;
		v->vt_left->vt_parent = s;
		s->vt_parent = parent;
		s->vt_height = v->vt_height;
		replace_child(t, parent, v, s);
	} else {
		struct vm_area_struct *child = v->vt_left ? v->vt_left : v->vt_right;

		if (child)
			child->vt_parent = parent;
		replace_child(t, parent, v, child);
		start = parent;
	}
	t->count--;
	/* Leave no stale links in a node that may be reinserted or freed. */
	v->vt_left = v->vt_right = v->vt_parent = NULL;
	v->vt_height = 0;
	rebalance(t, start);
}

/*
 * vm_end grows with vm_start (the intervals are disjoint), so "vm_end > addr"
 * is false for a prefix of the in-order sequence and true after it: descend,
 * keeping the lowest node seen for which it holds.
 */
struct vm_area_struct *vma_find(const struct vma_tree *t, uint64_t addr)
{
	struct vm_area_struct *n = t->root, *found = NULL;

	while (n) {
		if (n->vm_end > addr) {
			found = n;
			n = n->vt_left;
		} else {
			n = n->vt_right;
		}
	}
	return found;
}

struct vm_area_struct *vma_lookup(const struct vma_tree *t, uint64_t addr)
{
	struct vm_area_struct *n = t->root;

	/* Not vma_find() plus a check: a hit can stop at the containing node. */
	while (n) {
		if (addr < n->vm_start)
			n = n->vt_left;
		else if (addr >= n->vm_end)
			n = n->vt_right;
		else
			return n;
	}
	return NULL;
}

struct vm_area_struct *vma_lookup_lockless(const struct vma_tree *t, uint64_t addr)
{
	/* Relaxed: the nodes are type-stable, and what is found gets validated. */
	struct vm_area_struct *n = atomic_load_explicit(&t->root, memory_order_relaxed);

	for (int steps = 0; n && steps < VMA_LOCKLESS_MAX_STEPS; steps++) {
		if (addr < atomic_load_explicit(&n->vm_start, memory_order_relaxed))
			n = atomic_load_explicit(&n->vt_left, memory_order_relaxed);
		else if (addr >= atomic_load_explicit(&n->vm_end, memory_order_relaxed))
			n = atomic_load_explicit(&n->vt_right, memory_order_relaxed);
		else
			return n;
	}
	return NULL;	/* not found, or a walk sent astray by a rotation */
}

struct vm_area_struct *vma_first(const struct vma_tree *t)
{
	return t->root ? leftmost(t->root) : NULL;
}

struct vm_area_struct *vma_last(const struct vma_tree *t)
{
	return t->root ? rightmost(t->root) : NULL;
}

/*
 * In-order steps: down into the right subtree if there is one, else up to
 * the first ancestor we reach from its left.  A full walk crosses each link
 * twice, hence O(1) amortised.  (The casts drop const as the kernel's
 * rb_next() does: the caller owns the nodes.)
 */
struct vm_area_struct *vma_next(const struct vm_area_struct *v)
{
	struct vm_area_struct *n = (struct vm_area_struct *)v, *p;

	if (n->vt_right)
		return leftmost(n->vt_right);
	while ((p = n->vt_parent) && p->vt_right == n)
		n = p;
	return p;
}

struct vm_area_struct *vma_prev(const struct vm_area_struct *v)
{
	struct vm_area_struct *n = (struct vm_area_struct *)v, *p;

	if (n->vt_left)
		return rightmost(n->vt_left);
	while ((p = n->vt_parent) && p->vt_left == n)
		n = p;
	return p;
}

/* ------------------------------------------------------------------------
 * The checker.  It trusts nothing in the tree: every link, height and bound
 * is verified against what it derives itself, and the walk is bounded both
 * in depth and in nodes visited, so a cycle or a runaway chain ends it.
 */

struct check_state {
	const struct vm_area_struct *prev;	/* last node visited in order */
	size_t seen;
	size_t limit;				/* t->count: more nodes means corruption */
	const char *why;
};

/* Returns the height of the subtree at @n, or -1 with cs->why set. */
static int check_subtree(struct check_state *cs, const struct vm_area_struct *n,
			 const struct vm_area_struct *parent, int depth)
{
	int hl, hr;

	if (!n)
		return 0;
	if (depth > VMA_CHECK_MAX_DEPTH) {
		cs->why = "tree deeper than any AVL tree can be (cycle or lost balance)";
		return -1;
	}
	if (n->vt_parent != parent) {
		cs->why = parent ? "a node's vt_parent is not the node linking to it"
				 : "the root's vt_parent is not NULL";
		return -1;
	}
	hl = check_subtree(cs, n->vt_left, n, depth + 1);
	if (hl < 0)
		return -1;

	/* In-order position: compare with the node visited just before. */
	if (++cs->seen > cs->limit) {
		cs->why = "more nodes in the tree than its count";
		return -1;
	}
	if (n->vm_start >= n->vm_end) {
		cs->why = "a VMA with vm_start >= vm_end";
		return -1;
	}
	if (cs->prev && cs->prev->vm_start >= n->vm_start) {
		cs->why = "VMAs out of vm_start order";
		return -1;
	}
	if (cs->prev && cs->prev->vm_end > n->vm_start) {
		cs->why = "overlapping VMAs";
		return -1;
	}
	cs->prev = n;

	hr = check_subtree(cs, n->vt_right, n, depth + 1);
	if (hr < 0)
		return -1;
	if (n->vt_height != 1 + max_int(hl, hr)) {
		cs->why = "a node's vt_height is not its subtree's height";
		return -1;
	}
	if (hl - hr > 1 || hr - hl > 1) {
		cs->why = "a node's balance factor is outside -1..1";
		return -1;
	}
	return n->vt_height;
}

int vma_tree_check(const struct vma_tree *t, const char **why)
{
	struct check_state cs = { .prev = NULL, .seen = 0, .limit = t->count, .why = NULL };

	if (check_subtree(&cs, t->root, NULL, 0) >= 0 && cs.seen != t->count)
		cs.why = "fewer nodes in the tree than its count";
	if (why)
		*why = cs.why;
	return cs.why ? -EINVAL : 0;
}
