/* Workgroup reductions through shared memory (WG is a power of two). Every
 * invocation of the workgroup must call them (they contain barriers) and
 * gets the result. */
shared float red_s[WG];

float wg_sum(float v)
{
    uint t = gl_LocalInvocationID.x;
    red_s[t] = v;
    barrier();
    for (uint s = WG / 2u; s > 0u; s >>= 1) {
        if (t < s) red_s[t] += red_s[t + s];
        barrier();
    }
    float r = red_s[0];
    barrier();
    return r;
}

float wg_max(float v)
{
    uint t = gl_LocalInvocationID.x;
    red_s[t] = v;
    barrier();
    for (uint s = WG / 2u; s > 0u; s >>= 1) {
        if (t < s) red_s[t] = max(red_s[t], red_s[t + s]);
        barrier();
    }
    float r = red_s[0];
    barrier();
    return r;
}
