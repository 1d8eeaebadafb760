/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * The native extension's interface to Python. This header is both compiled
 * into the extension and, preprocessed with -DAXP_CDEF, fed to cffi's cdef:
 * keep it to plain declarations. Every int-returning call returns 0 (or a
 * non-negative value) on success and a negative errno on failure.
 */
#ifndef AXP_NATIVE_H
#define AXP_NATIVE_H

#ifndef AXP_CDEF
#include <stddef.h>
#include <stdint.h>
#endif
#include "proxy.shared.h"
/* the AF_XDP backend: the per-packet engine, its micro-benchmark, the sockets and their loop */
#include "axp_engine.h"
#include "axp_bench.h"
#include "axp_xsk.h"
#include "axp_trace.h" /* `afxdp-proxy trace`: the workers' event ring, readers of both backends */

struct bpf_object;

struct axp_map_info {
	uint32_t id;
	uint32_t type;
	uint32_t key_size;
	uint32_t value_size;
	uint32_t max_entries;
	char name[16];
};

struct axp_prog_info {
	uint32_t id;
	uint32_t type;
	uint64_t run_time_ns;
	uint64_t run_cnt;
	char name[16];
};

/* libbpf's messages go to a buffer Python reads when a call failed. */
void axp_log_capture(int debug);
const char *axp_log_text(void);
void axp_log_clear(void);

/* objects */
struct bpf_object *axp_obj_open(const char *path, int *err);
int axp_obj_set_rodata(struct bpf_object *obj, const void *data, size_t size);
int axp_obj_set_max_entries(struct bpf_object *obj, const char *map, uint32_t n);
int axp_obj_set_autoload(struct bpf_object *obj, const char *prog, int autoload);
/* before load: the object's map `map` is the existing map fd (shared with another object) */
int axp_obj_reuse_map(struct bpf_object *obj, const char *map, int fd);
int axp_obj_load(struct bpf_object *obj);
void axp_obj_close(struct bpf_object *obj);
int axp_obj_prog_fd(struct bpf_object *obj, const char *prog);
int axp_obj_map_fd(struct bpf_object *obj, const char *map);
/*
 * Pinning (what `run --keep-cache` keeps across a restart): before load, a map
 * given a pin path reuses the map pinned there (libbpf checks type, sizes and
 * max_entries) or is created and pinned there by the load. axp_obj_get opens a
 * pinned object; axp_mount_bpffs mounts a bpffs instance on a directory.
 */
int axp_obj_set_pin_path(struct bpf_object *obj, const char *map, const char *path);
int axp_obj_get(const char *path);
int axp_mount_bpffs(const char *path);

/* hooks */
int axp_xdp_attach(int ifindex, int prog_fd, uint32_t flags);
int axp_xdp_detach(int ifindex, uint32_t flags, uint32_t expected_prog_id);
int axp_xdp_query(int ifindex, uint32_t *prog_id);
int axp_tc_attach(int ifindex, int egress, int prog_fd, int *hook_created);
int axp_tc_detach(int ifindex, int egress, int destroy_hook);
int axp_tc_query(int ifindex, int egress, uint32_t *prog_id);

/*
 * BPF links: the attachment lives as long as the returned fd, so a proxy that
 * dies, even by SIGKILL, leaves nothing attached. Close the fd to detach.
 */
int axp_link_xdp(int prog_fd, int ifindex);
int axp_link_tcx(int prog_fd, int ifindex, int egress);
/* a tp_btf program on its tracepoint (a raw tracepoint fd: closing it detaches) */
int axp_link_raw_tp(int prog_fd);
int axp_link_detach(int link_fd);
/* The link's program replaced by prog_fd in place (no moment without one). */
int axp_link_update(int link_fd, int prog_fd);

/* maps and programs by fd; flags BPF_F_LOCK copies a value with a bpf_spin_lock under that lock */
int axp_map_lookup(int fd, const void *key, void *value, uint64_t flags);
/* entries first..first+n-1 of an array map in one BPF_MAP_LOOKUP_BATCH (per-CPU: n x CPUs values) */
int axp_map_lookup_range(int fd, uint32_t first, uint32_t n, void *values);
int axp_map_update(int fd, const void *key, const void *value, uint64_t flags);
int axp_map_delete(int fd, const void *key);
int axp_map_next_key(int fd, const void *key, void *next_key);
long axp_map_count(int fd, uint32_t key_size);
int axp_map_info(int fd, struct axp_map_info *info);
int axp_map_fd_by_id(uint32_t id);
int axp_prog_info(int fd, struct axp_prog_info *info);
int axp_prog_fd_by_id(uint32_t id);
int axp_prog_next_id(uint32_t start, uint32_t *next);
int axp_enable_run_stats(void);
int axp_num_possible_cpus(void);
int axp_close_fd(int fd);

/* BPF_PROG_TEST_RUN / BPF_PROG_RUN */
int axp_prog_test_run(int prog_fd, const void *data_in, uint32_t size_in, void *data_out,
		      uint32_t *size_out, const void *ctx_in, uint32_t ctx_size_in,
		      uint32_t repeat, uint32_t flags, uint32_t batch_size, uint32_t *retval,
		      uint32_t *duration_ns);

/* the shared parser on plain buffers (tests compare it with BPF and Python) */
int axp_parse_frame(const uint8_t *frame, uint32_t len, uint32_t *labels, struct axp_frame *f,
		    struct axp_key *key);
int axp_key_of_ip(const uint8_t *l3, uint32_t len, struct axp_key *key);
/* the dwell histogram's bucket of a time in ns (axp_dwell_bucket, proxy.shared.h) */
uint32_t axp_dwell_bucket_of(uint64_t ns);

#endif /* AXP_NATIVE_H */
