/* cherryq tests: a table of op cases (random inputs on the CPU) that the op
 * tests and the backend parity harness replay on any backend. */
#ifndef CQ_TEST_OP_CASES_H
#define CQ_TEST_OP_CASES_H

#include "cq_tensor.h"

typedef struct op_case {
    char name[64];
    cq_op op;          /* tensors live on the CPU backend */
    double tol;        /* max normalized error allowed vs the reference */
    /* the reference: NULL = cq_ref_compute; else this computes op's dsts
     * (on CPU tensors) instead, for kernels with another oracle */
    int (*ref)(cq_op *op);
} op_case;

/* Builds all cases on the CPU backend `cpu`. Returns the count; *cases is
 * malloc'ed. seed makes the random data reproducible. */
int op_cases_build(cq_backend *cpu, op_case **cases, unsigned seed);
void op_cases_free(op_case *cases, int n);

/* Runs case c on backend `be` (tensors are copied there) and compares every
 * dst with the scalar reference. Returns 0 ok, 1 mismatch, CQ_ENOTSUP if
 * declined, <0 other errors. err_out gets the max normalized error. */
int op_case_check(cq_backend *be, const op_case *c, double *err_out);

/* deterministic random numbers */
void tr_seed(unsigned s);
uint32_t tr_u32(void);
float tr_uniform(float lo, float hi);
float tr_normal(void);

#endif
