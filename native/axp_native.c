// SPDX-License-Identifier: BSD-2-Clause
/*
 * libbpf glue for the Python package: thin wrappers with flat signatures so
 * the cffi declarations stay free of libbpf's option structs.
 */
#include <errno.h>
#include <net/if.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/mount.h>

#include <linux/if_link.h>
#include <bpf/bpf.h>
#include <bpf/libbpf.h>

#include "axp_native.h"
#include "parse.shared.h"

#define AXP_LOG_SIZE (64 * 1024)

static char axp_log_buf[AXP_LOG_SIZE];
static size_t axp_log_len;
static int axp_log_debug;

/*
 * Keep the *end* of what libbpf says: a verifier log runs to thousands of lines
 * and its verdict is the last one. When a message does not fit, the older half
 * of the buffer goes.
 */
static void axp_log_append(const char *text, size_t n)
{
	static const char cut[] = "[... earlier lines dropped ...]\n";
	size_t keep;

	/* a message longer than the buffer (a whole verifier log) keeps its end: the verdict */
	if (n > AXP_LOG_SIZE / 2) {
		text += n - AXP_LOG_SIZE / 2;
		n = AXP_LOG_SIZE / 2;
	}
	if (axp_log_len + n >= AXP_LOG_SIZE) {
		keep = AXP_LOG_SIZE / 2 - sizeof(cut);
		memmove(axp_log_buf + sizeof(cut) - 1, axp_log_buf + axp_log_len - keep, keep);
		memcpy(axp_log_buf, cut, sizeof(cut) - 1);
		axp_log_len = sizeof(cut) - 1 + keep;
	}
	memcpy(axp_log_buf + axp_log_len, text, n);
	axp_log_len += n;
}

static int axp_log_print(enum libbpf_print_level level, const char *fmt, va_list args)
{
	char line[4096], *big;
	va_list again;
	int n;

	if (level == LIBBPF_DEBUG && !axp_log_debug)
		return 0;
	va_copy(again, args);
	n = vsnprintf(line, sizeof(line), fmt, args);
	if (n > 0 && (size_t)n < sizeof(line)) {
		axp_log_append(line, n);
	} else if (n > 0) {
		big = malloc((size_t)n + 1);
		if (big && vsnprintf(big, (size_t)n + 1, fmt, again) == n)
			axp_log_append(big, n);
		else
			axp_log_append(line, sizeof(line) - 1);
		free(big);
	}
	va_end(again);
	return n;
}

void axp_log_capture(int debug)
{
	axp_log_debug = debug;
	libbpf_set_print(axp_log_print);
}

const char *axp_log_text(void)
{
	axp_log_buf[axp_log_len] = '\0';
	return axp_log_buf;
}

void axp_log_clear(void)
{
	axp_log_len = 0;
	axp_log_buf[0] = '\0';
}

static int axp_err(long ret)
{
	if (ret >= 0)
		return 0;
	return errno ? -errno : (int)ret;
}

struct bpf_object *axp_obj_open(const char *path, int *err)
{
	struct bpf_object *obj = bpf_object__open_file(path, NULL);
	long e = libbpf_get_error(obj);

	*err = e ? (int)e : 0;
	return e ? NULL : obj;
}

static struct bpf_map *axp_rodata_map(struct bpf_object *obj)
{
	struct bpf_map *map;

	bpf_object__for_each_map(map, obj) {
		const char *name = bpf_map__name(map);
		size_t n = strlen(name);

		if (bpf_map__is_internal(map) && n >= 7 && !strcmp(name + n - 7, ".rodata"))
			return map;
	}
	return NULL;
}

int axp_obj_set_rodata(struct bpf_object *obj, const void *data, size_t size)
{
	struct bpf_map *map = axp_rodata_map(obj);
	size_t have = 0;
	const void *init;

	if (!map)
		return -ENOENT;
	init = bpf_map__initial_value(map, &have);
	if (!init)
		return -ENOENT;
	if (have != size)
		return -EINVAL;
	/* before load the initial value is writable libbpf memory */
	memcpy((void *)init, data, size);
	return 0;
}

int axp_obj_set_max_entries(struct bpf_object *obj, const char *name, uint32_t n)
{
	struct bpf_map *map = bpf_object__find_map_by_name(obj, name);

	if (!map)
		return -ENOENT;
	return bpf_map__set_max_entries(map, n);
}

int axp_obj_set_autoload(struct bpf_object *obj, const char *name, int autoload)
{
	struct bpf_program *prog = bpf_object__find_program_by_name(obj, name);

	if (!prog)
		return -ENOENT;
	return bpf_program__set_autoload(prog, autoload);
}

int axp_obj_reuse_map(struct bpf_object *obj, const char *name, int fd)
{
	struct bpf_map *map = bpf_object__find_map_by_name(obj, name);

	if (!map)
		return -ENOENT;
	return bpf_map__reuse_fd(map, fd);
}

int axp_obj_load(struct bpf_object *obj)
{
	return bpf_object__load(obj);
}

void axp_obj_close(struct bpf_object *obj)
{
	bpf_object__close(obj);
}

int axp_obj_prog_fd(struct bpf_object *obj, const char *name)
{
	struct bpf_program *prog = bpf_object__find_program_by_name(obj, name);

	return prog ? bpf_program__fd(prog) : -ENOENT;
}

int axp_obj_map_fd(struct bpf_object *obj, const char *name)
{
	struct bpf_map *map = bpf_object__find_map_by_name(obj, name);

	return map ? bpf_map__fd(map) : -ENOENT;
}

int axp_obj_set_pin_path(struct bpf_object *obj, const char *name, const char *path)
{
	struct bpf_map *map = bpf_object__find_map_by_name(obj, name);

	if (!map)
		return -ENOENT;
	return bpf_map__set_pin_path(map, path);
}

int axp_obj_get(const char *path)
{
	int fd = bpf_obj_get(path);

	return fd < 0 ? -errno : fd;
}

int axp_mount_bpffs(const char *path)
{
	/* private to root, as /sys/fs/bpf is on most systems */
	return mount("bpf", path, "bpf", 0, "mode=0700") ? -errno : 0;
}

int axp_xdp_attach(int ifindex, int prog_fd, uint32_t flags)
{
	return bpf_xdp_attach(ifindex, prog_fd, flags, NULL);
}

int axp_xdp_detach(int ifindex, uint32_t flags, uint32_t expected_prog_id)
{
	LIBBPF_OPTS(bpf_xdp_attach_opts, opts, .old_prog_fd = -1);
	int fd = -1, err;

	/* detach only our program: if someone replaced it, leave theirs alone */
	if (expected_prog_id) {
		fd = bpf_prog_get_fd_by_id(expected_prog_id);
		if (fd < 0)
			return -ENOENT;
		opts.old_prog_fd = fd;
		flags |= XDP_FLAGS_REPLACE;
	}
	err = bpf_xdp_attach(ifindex, -1, flags, &opts);
	if (fd >= 0)
		close(fd);
	return err;
}

int axp_xdp_query(int ifindex, uint32_t *prog_id)
{
	return bpf_xdp_query_id(ifindex, 0, prog_id);
}

int axp_tc_attach(int ifindex, int egress, int prog_fd, int *hook_created)
{
	LIBBPF_OPTS(bpf_tc_hook, hook, .ifindex = ifindex,
		    .attach_point = egress ? BPF_TC_EGRESS : BPF_TC_INGRESS);
	LIBBPF_OPTS(bpf_tc_opts, opts, .handle = 1, .priority = 1, .prog_fd = prog_fd);
	int err;

	err = bpf_tc_hook_create(&hook);
	*hook_created = !err;
	if (err && err != -EEXIST)
		return err;
	err = bpf_tc_attach(&hook, &opts);
	if (err && *hook_created) {
		hook.attach_point = BPF_TC_INGRESS | BPF_TC_EGRESS;
		bpf_tc_hook_destroy(&hook);
		*hook_created = 0;
	}
	return err;
}

int axp_tc_detach(int ifindex, int egress, int destroy_hook)
{
	LIBBPF_OPTS(bpf_tc_hook, hook, .ifindex = ifindex,
		    .attach_point = egress ? BPF_TC_EGRESS : BPF_TC_INGRESS);
	LIBBPF_OPTS(bpf_tc_opts, opts, .handle = 1, .priority = 1);
	int err;

	err = bpf_tc_detach(&hook, &opts);
	if (destroy_hook) {
		/* the clsact qdisc is ours: removing it removes both directions */
		hook.attach_point = BPF_TC_INGRESS | BPF_TC_EGRESS;
		err = bpf_tc_hook_destroy(&hook);
	}
	return err;
}

int axp_tc_query(int ifindex, int egress, uint32_t *prog_id)
{
	LIBBPF_OPTS(bpf_tc_hook, hook, .ifindex = ifindex,
		    .attach_point = egress ? BPF_TC_EGRESS : BPF_TC_INGRESS);
	LIBBPF_OPTS(bpf_tc_opts, opts, .handle = 1, .priority = 1);
	int err = bpf_tc_query(&hook, &opts);

	*prog_id = err ? 0 : opts.prog_id;
	return err;
}

/* Linux 6.6 uapi values; Debian 12's headers predate TCX */
#define AXP_BPF_TCX_INGRESS 46
#define AXP_BPF_TCX_EGRESS 47

int axp_link_xdp(int prog_fd, int ifindex)
{
	int fd = bpf_link_create(prog_fd, ifindex, BPF_XDP, NULL);

	return fd < 0 ? -errno : fd;
}

int axp_link_tcx(int prog_fd, int ifindex, int egress)
{
	int fd = bpf_link_create(prog_fd, ifindex,
				 egress ? AXP_BPF_TCX_EGRESS : AXP_BPF_TCX_INGRESS, NULL);

	return fd < 0 ? -errno : fd;
}

int axp_link_raw_tp(int prog_fd)
{
	/* a tp_btf program names its tracepoint itself (attach_btf_id) */
	int fd = bpf_raw_tracepoint_open(NULL, prog_fd);

	return fd < 0 ? -errno : fd;
}

int axp_link_update(int link_fd, int prog_fd)
{
	return bpf_link_update(link_fd, prog_fd, NULL) ? -errno : 0;
}

int axp_link_detach(int link_fd)
{
	int err = bpf_link_detach(link_fd);

	close(link_fd);
	return err ? -errno : 0;
}

int axp_map_lookup(int fd, const void *key, void *value, uint64_t flags)
{
	return axp_err(bpf_map_lookup_elem_flags(fd, key, value, flags));
}

int axp_map_lookup_range(int fd, uint32_t first, uint32_t n, void *values)
{
	uint32_t *keys, in = first - 1, out = 0, count = n;
	int err;

	/* an array's batch resumes after the key it is given: none for key 0 */
	keys = calloc(n ? n : 1, sizeof(*keys));
	if (!keys)
		return -ENOMEM;
	err = bpf_map_lookup_batch(fd, first ? &in : NULL, &out, keys, values, &count, NULL);
	free(keys);
	if (err && errno != ENOENT)
		return axp_err(err);
	return count == n ? 0 : -ERANGE;
}

int axp_map_update(int fd, const void *key, const void *value, uint64_t flags)
{
	return axp_err(bpf_map_update_elem(fd, key, value, flags));
}

int axp_map_delete(int fd, const void *key)
{
	return axp_err(bpf_map_delete_elem(fd, key));
}

int axp_map_next_key(int fd, const void *key, void *next_key)
{
	return axp_err(bpf_map_get_next_key(fd, key, next_key));
}

long axp_map_count(int fd, uint32_t key_size)
{
	unsigned char a[256], b[256];
	unsigned char *cur = NULL, *next = a;
	long n = 0;

	if (key_size > sizeof(a))
		return -EINVAL;
	while (!bpf_map_get_next_key(fd, cur, next)) {
		n++;
		cur = next;
		next = next == a ? b : a;
	}
	return errno == ENOENT ? n : -errno;
}

int axp_map_info(int fd, struct axp_map_info *out)
{
	struct bpf_map_info info = {};
	__u32 len = sizeof(info);
	int err = bpf_obj_get_info_by_fd(fd, &info, &len);

	if (err)
		return axp_err(err);
	out->id = info.id;
	out->type = info.type;
	out->key_size = info.key_size;
	out->value_size = info.value_size;
	out->max_entries = info.max_entries;
	memcpy(out->name, info.name, sizeof(out->name));
	return 0;
}

int axp_map_fd_by_id(uint32_t id)
{
	int fd = bpf_map_get_fd_by_id(id);

	return fd < 0 ? -errno : fd;
}

int axp_prog_info(int fd, struct axp_prog_info *out)
{
	struct bpf_prog_info info = {};
	__u32 len = sizeof(info);
	int err = bpf_obj_get_info_by_fd(fd, &info, &len);

	if (err)
		return axp_err(err);
	out->id = info.id;
	out->type = info.type;
	out->run_time_ns = info.run_time_ns;
	out->run_cnt = info.run_cnt;
	memcpy(out->name, info.name, sizeof(out->name));
	return 0;
}

int axp_prog_fd_by_id(uint32_t id)
{
	int fd = bpf_prog_get_fd_by_id(id);

	return fd < 0 ? -errno : fd;
}

int axp_prog_next_id(uint32_t start, uint32_t *next)
{
	return bpf_prog_get_next_id(start, next) ? -errno : 0;
}

int axp_enable_run_stats(void)
{
	int fd = bpf_enable_stats(BPF_STATS_RUN_TIME);

	return fd < 0 ? -errno : fd;
}

int axp_num_possible_cpus(void)
{
	return libbpf_num_possible_cpus();
}

int axp_close_fd(int fd)
{
	return close(fd) ? -errno : 0;
}

int axp_prog_test_run(int prog_fd, const void *data_in, uint32_t size_in, void *data_out,
		      uint32_t *size_out, const void *ctx_in, uint32_t ctx_size_in,
		      uint32_t repeat, uint32_t flags, uint32_t batch_size, uint32_t *retval,
		      uint32_t *duration_ns)
{
	LIBBPF_OPTS(bpf_test_run_opts, opts, .data_in = data_in, .data_size_in = size_in,
		    .data_out = data_out, .data_size_out = size_out ? *size_out : 0,
		    .ctx_in = ctx_in, .ctx_size_in = ctx_size_in, .repeat = repeat,
		    .flags = flags, .batch_size = batch_size);
	int err = bpf_prog_test_run_opts(prog_fd, &opts);

	if (err)
		return axp_err(err);
	if (size_out)
		*size_out = opts.data_size_out;
	*retval = opts.retval;
	*duration_ns = opts.duration;
	return 0;
}

int axp_parse_frame(const uint8_t *frame, uint32_t len, uint32_t *labels, struct axp_frame *f,
		    struct axp_key *key)
{
	memset(key, 0, sizeof(*key));
	memset(f, 0, sizeof(*f));
	return axp_parse_mpls_frame(frame, frame + len, labels, f, key);
}

int axp_key_of_ip(const uint8_t *l3, uint32_t len, struct axp_key *key)
{
	memset(key, 0, sizeof(*key));
	return axp_derive_key(l3, l3 + len, key);
}

uint32_t axp_dwell_bucket_of(uint64_t ns)
{
	return axp_dwell_bucket(ns);
}
