/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * What the extension's C files share among themselves and do not export:
 * never fed to cffi's cdef (axp_native.h does not include it).
 */
#ifndef AXP_INTERNAL_H
#define AXP_INTERNAL_H

#include <stdint.h>

struct axp_engine;
struct axp_sf;

/* A spin-wait's pause: lets the sibling hyperthread run while one waits on a lock or a ring. */
static inline void axp_cpu_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
	__builtin_ia32_pause();
#endif
}

/*
 * SF index as the engine has it, or NULL when it has none: what the socket loop needs to map
 * an SF to its ports. Not for the data path (a call per frame): the loop keeps its own maps.
 */
const struct axp_sf *axp_engine_sf(const struct axp_engine *e, uint32_t index);

#endif /* AXP_INTERNAL_H */
