#version 450
/* Embedding lookup and its backward.
 *   mode 0 EMBED (one invocation per (n, e)): d[n, e] = table[ids[n], e]
 *          (table f32/f16/bf16 -> f32 dst).
 *   mode 1 EMBED_BWD link (one invocation per n): next[n] = the next m > n
 *          with ids[m] == ids[n] or -1; first[n] = 1 if no m < n has it.
 *   mode 2 EMBED_BWD gather (one invocation per (n, e) with first[n]):
 *          dtable[ids[n], e] = sum of dy[m, e] along the chain from n, in
 *          ascending m (deterministic, the CPU's order; no float atomics).
 *          Rows of dtable that no id names were zeroed by the host.
 * An id outside [0, V) (the front-end rejects them; this guards the device)
 * is skipped (its row reads as 0) and sets bit 1 of the status word. */
#include "common.glsl"

layout(binding = 0) readonly buffer Tb { uint table[]; };   /* table or dy */
layout(binding = 1) readonly buffer Ib { uint ids[]; };
layout(binding = 2) buffer Db { uint d[]; };                 /* dst or dtable */
layout(binding = 3) buffer Lb { uint link[]; };              /* next[N], first[N] */
layout(binding = 4) buffer Eb { uint status[]; };

layout(push_constant) uniform PC {
    uint toff, ioff, doff, loff, N, E, dt, mode, V, soff;
} pc;

DEF_LOAD_ANYF(ldt, table)

void main()
{
    uint i = gid_linear();
    uint lb = pc.loff >> 2;
    if (pc.mode == 1u) {
        if (i >= pc.N) return;
        int id = int(ids[(pc.ioff >> 2) + i]);
        int nxt = -1;
        for (uint m = i + 1u; m < pc.N; m++)
            if (int(ids[(pc.ioff >> 2) + m]) == id) { nxt = int(m); break; }
        uint first = 1u;
        for (uint m = 0u; m < i; m++)
            if (int(ids[(pc.ioff >> 2) + m]) == id) { first = 0u; break; }
        link[lb + i] = uint(nxt);
        link[lb + pc.N + i] = first;
        return;
    }
    if (i >= pc.N * pc.E) return;
    uint n = i / pc.E, e = i % pc.E;
    uint id = ids[(pc.ioff >> 2) + n];
    if (id >= pc.V) {
        if (e == 0u) atomicOr(status[pc.soff >> 2], 2u);
        if (pc.mode == 0u) d[(pc.doff >> 2) + i] = 0u;
        return;
    }
    if (pc.mode == 0u) {
        d[(pc.doff >> 2) + i] = floatBitsToUint(ldt(pc.toff, id * pc.E + e, pc.dt));
        return;
    }
    if (link[lb + pc.N + n] == 0u) return;
    float acc = 0.0;
    int m = int(n);
    while (m >= 0) {
        acc += ldt(pc.toff, uint(m) * pc.E + e, 0u);
        m = int(link[lb + uint(m)]);
    }
    d[(pc.doff >> 2) + id * pc.E + e] = floatBitsToUint(acc);
}
