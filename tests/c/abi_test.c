/*
 * C ABI test for libcvmfs_graphdriver, compiled against the checked-in header
 * and the static library. Part 1 calls every exported function with NULL
 * arguments and with invalid UTF-8 strings and checks the result codes (a crash
 * or abort fails the whole run). Part 2 (root only) drives a real driver:
 * new/create/get/put/remove, apply_diff from a pipe and diff into a pipe.
 * Prints "c-abi: N passed, N failed, N skipped".
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "cvmfs_graphdriver.h"

static int passed, failed, skipped;

#define CHECK(cond, ...)                                   \
  do {                                                     \
    if (cond) {                                            \
      passed++;                                            \
    } else {                                               \
      failed++;                                            \
      fprintf(stderr, "FAIL %s:%d: ", __FILE__, __LINE__); \
      fprintf(stderr, __VA_ARGS__);                        \
      fprintf(stderr, "\n");                               \
    }                                                      \
  } while (0)

/* Check rc == want, that *err carries the same code and a message, then free it. */
static void expect(const char *what, cvmfs_result rc, cvmfs_error **err, cvmfs_result want) {
  CHECK(rc == want, "%s: rc %d, want %d (%s)", what, rc, want, *err ? cvmfs_error_message(*err) : "no error object");
  if (want != CVMFS_RESULT_OK) {
    CHECK(*err != NULL, "%s: no error object", what);
    if (*err) {
      CHECK(cvmfs_error_code(*err) == want, "%s: error object code %d", what, cvmfs_error_code(*err));
      CHECK(strlen(cvmfs_error_message(*err)) > 0, "%s: empty message", what);
    }
  }
  cvmfs_error_free(*err);
  *err = NULL;
}

static const char BAD[] = {(char)0xff, (char)0xfe, 'x', 0}; /* not UTF-8 */

static void null_and_utf8_checks(void) {
  cvmfs_error *err = NULL;
  cvmfs_driver *d = (cvmfs_driver *)0x1; /* must stay untouched on failure */
  char *s = (char *)0x1;
  bool b = false;
  int64_t n = -7, m = -7;
  const char *opts[] = {NULL};
  const char *bad_opts[] = {BAD};
  const int INV = CVMFS_RESULT_INVALID_ARGUMENT;

  /* Error and string helpers are NULL-tolerant. */
  CHECK(cvmfs_error_code(NULL) == INV, "error_code(NULL)");
  CHECK(cvmfs_error_message(NULL) != NULL && cvmfs_error_message(NULL)[0] == 0, "error_message(NULL)");
  cvmfs_error_free(NULL);
  cvmfs_string_free(NULL);
  cvmfs_driver_free(NULL);
  CHECK(cvmfs_version() != NULL && strlen(cvmfs_version()) > 0, "version");
  /* Names come from the same enum as the codes; a value that is no code has none. */
  CHECK(cvmfs_result_name(CVMFS_RESULT_LAYER_UNKNOWN) != NULL &&
            strcmp(cvmfs_result_name(CVMFS_RESULT_LAYER_UNKNOWN), "layer unknown") == 0,
        "result_name(LAYER_UNKNOWN)");
  CHECK(cvmfs_result_name(CVMFS_RESULT_PANIC) != NULL, "result_name(PANIC)");
  CHECK(cvmfs_result_name(11) == NULL && cvmfs_result_name(-1) == NULL, "result_name(not a code)");

  expect("new(NULL home)", cvmfs_driver_new(NULL, "/tmp/x", NULL, 0, &d, &err), &err, INV);
  expect("new(NULL run_root)", cvmfs_driver_new("/tmp/x", NULL, NULL, 0, &d, &err), &err, INV);
  expect("new(bad home)", cvmfs_driver_new(BAD, "/tmp/x", NULL, 0, &d, &err), &err, INV);
  expect("new(bad run_root)", cvmfs_driver_new("/tmp/x", BAD, NULL, 0, &d, &err), &err, INV);
  expect("new(NULL options, n=1)", cvmfs_driver_new("/tmp/x", "/tmp/y", NULL, 1, &d, &err), &err, INV);
  expect("new(options[0]=NULL)", cvmfs_driver_new("/tmp/x", "/tmp/y", opts, 1, &d, &err), &err, INV);
  expect("new(bad option)", cvmfs_driver_new("/tmp/x", "/tmp/y", bad_opts, 1, &d, &err), &err, INV);
  expect("new(NULL driver_out)", cvmfs_driver_new("/tmp/x", "/tmp/y", NULL, 0, NULL, &err), &err, INV);
  CHECK(d == (cvmfs_driver *)0x1, "driver_out written on failure");
  /* err_out NULL is allowed: only the code comes back. */
  CHECK(cvmfs_driver_new(NULL, NULL, NULL, 0, &d, NULL) == INV, "new with NULL err_out");

  expect("cleanup(NULL)", cvmfs_driver_cleanup(NULL, &err), &err, INV);
  expect("create(NULL)", cvmfs_driver_create(NULL, "a", NULL, false, NULL, 0, &err), &err, INV);
  expect("create_mapped(NULL)", cvmfs_driver_create_mapped(NULL, "a", NULL, false, NULL, 0, NULL, &err), &err, INV);
  expect("create_from_template(NULL)", cvmfs_driver_create_from_template(NULL, "a", "b", NULL, false, &err), &err, INV);
  expect("remove(NULL)", cvmfs_driver_remove(NULL, "a", &err), &err, INV);
  expect("exists(NULL)", cvmfs_driver_exists(NULL, "a", &b, &err), &err, INV);
  expect("list_layers(NULL)", cvmfs_driver_list_layers(NULL, &s, &err), &err, INV);
  expect("get(NULL)", cvmfs_driver_get(NULL, "a", NULL, NULL, 0, &s, &err), &err, INV);
  expect("put(NULL)", cvmfs_driver_put(NULL, "a", &err), &err, INV);
  expect("status(NULL)", cvmfs_driver_status(NULL, &s, &err), &err, INV);
  expect("metadata(NULL)", cvmfs_driver_metadata(NULL, "a", &s, &err), &err, INV);
  expect("additional_image_stores(NULL)", cvmfs_driver_additional_image_stores(NULL, &s, &err), &err, INV);
  expect("read_write_disk_usage(NULL)", cvmfs_driver_read_write_disk_usage(NULL, "a", &n, &m, &err), &err, INV);
  expect("layer_content_dirs(NULL)", cvmfs_driver_layer_content_dirs(NULL, "a", &s, &err), &err, INV);
  expect("layer_content_dir(NULL)", cvmfs_driver_layer_content_dir(NULL, "a", &s, &err), &err, INV);
  expect("apply_diff(NULL)", cvmfs_driver_apply_diff(NULL, "a", 0, NULL, &n, &err), &err, INV);
  expect("diff(NULL)", cvmfs_driver_diff(NULL, "a", NULL, NULL, 1, &err), &err, INV);
  expect("changes(NULL)", cvmfs_driver_changes(NULL, "a", NULL, &s, &err), &err, INV);
  expect("diff_size(NULL)", cvmfs_driver_diff_size(NULL, "a", NULL, &n, &err), &err, INV);
  expect("update_id_map(NULL)", cvmfs_driver_update_id_map(NULL, "a", NULL, NULL, &err), &err, INV);
  expect("provide(NULL)", cvmfs_driver_provide(NULL, "image", "a", &b, &err), &err, INV);
  CHECK(s == (char *)0x1 && n == -7 && m == -7 && b == false, "outputs written on failure");

  /* A real handle in a temporary home (needs no root) for per-argument checks. */
  char home[] = "/tmp/cvmfs-abi-XXXXXX";
  if (!mkdtemp(home)) {
    CHECK(0, "mkdtemp: %s", strerror(errno));
    return;
  }
  char h[512], r[512];
  snprintf(h, sizeof h, "%s/graph/cvmfs", home);
  snprintf(r, sizeof r, "%s/run", home);
  cvmfs_driver *drv = NULL;
  const char *unknown_opt[] = {"cvmfs.nosuchkey=1"};
  expect("new(unknown option)", cvmfs_driver_new(h, r, unknown_opt, 1, &drv, &err), &err, INV);
  expect("new", cvmfs_driver_new(h, r, NULL, 0, &drv, &err), &err, CVMFS_RESULT_OK);
  if (!drv) return;

  /* Every export taking an ID refuses what is no layer name (docs/c-abi.md, "Layer IDs"). */
  char long_id[130];
  memset(long_id, 'a', 129);
  long_id[129] = 0;
  struct { const char *name; const char *v; } ids[] = {
      {"NULL id", NULL}, {"bad id", BAD}, {"newline id", "a\nb"}, {"slash id", "../x"},
      {"dotdot id", ".."}, {"comma id", "x,lowerdir=/"}, {"escape id", "\x1b[2J"}, {"129-byte id", long_id}};
  for (size_t i = 0; i < sizeof ids / sizeof ids[0]; i++) {
    const char *id = ids[i].v;
    char w[128];
#define E(call) do { snprintf(w, sizeof w, "%s: %s", ids[i].name, #call); expect(w, call, &err, INV); } while (0)
    E(cvmfs_driver_create(drv, id, NULL, false, NULL, 0, &err));
    E(cvmfs_driver_create_mapped(drv, id, NULL, false, NULL, 0, NULL, &err));
    E(cvmfs_driver_create_from_template(drv, id, "t", NULL, false, &err));
    E(cvmfs_driver_create_from_template(drv, "x", id, NULL, false, &err));
    E(cvmfs_driver_remove(drv, id, &err));
    E(cvmfs_driver_exists(drv, id, &b, &err));
    E(cvmfs_driver_get(drv, id, NULL, NULL, 0, &s, &err));
    E(cvmfs_driver_put(drv, id, &err));
    E(cvmfs_driver_metadata(drv, id, &s, &err));
    E(cvmfs_driver_read_write_disk_usage(drv, id, &n, &m, &err));
    E(cvmfs_driver_layer_content_dir(drv, id, &s, &err));
    E(cvmfs_driver_layer_content_dirs(drv, id, &s, &err));
    E(cvmfs_driver_apply_diff(drv, id, 0, NULL, &n, &err));
    E(cvmfs_driver_diff(drv, id, NULL, NULL, 1, &err));
    E(cvmfs_driver_changes(drv, id, NULL, &s, &err));
    E(cvmfs_driver_diff_size(drv, id, NULL, &n, &err));
    E(cvmfs_driver_update_id_map(drv, id, NULL, NULL, &err));
#undef E
  }
  /* Invalid UTF-8 in optional and list arguments. */
  expect("create(bad parent)", cvmfs_driver_create(drv, "x", BAD, false, NULL, 0, &err), &err, INV);
  expect("create(bad storage opt)", cvmfs_driver_create(drv, "x", NULL, false, bad_opts, 1, &err), &err, INV);
  expect("create(NULL storage opts, n=1)", cvmfs_driver_create(drv, "x", NULL, false, NULL, 1, &err), &err, INV);
  expect("create_mapped(bad parent)", cvmfs_driver_create_mapped(drv, "x", BAD, false, NULL, 0, NULL, &err), &err, INV);
  expect("create_mapped(bad opt)", cvmfs_driver_create_mapped(drv, "x", NULL, false, bad_opts, 1, NULL, &err), &err, INV);
  expect("create_mapped(bad mappings)", cvmfs_driver_create_mapped(drv, "x", NULL, false, NULL, 0, BAD, &err), &err, INV);
  /* ID maps the kernel would refuse (docs/c-abi.md, "ID mappings"). */
  expect("create_mapped(host_id and size 4294967295)", cvmfs_driver_create_mapped(drv, "x", NULL, false, NULL, 0,
         "{\"uids\":[{\"container_id\":0,\"host_id\":4294967295,\"size\":4294967295}]}", &err), &err, INV);
  expect("create_mapped(size 0)", cvmfs_driver_create_mapped(drv, "x", NULL, false, NULL, 0,
         "{\"gids\":[{\"container_id\":0,\"host_id\":1000,\"size\":0}]}", &err), &err, INV);
  expect("create_mapped(overlap)", cvmfs_driver_create_mapped(drv, "x", NULL, false, NULL, 0,
         "{\"uids\":[{\"container_id\":0,\"host_id\":1000,\"size\":10},{\"container_id\":5,\"host_id\":5000,\"size\":1}]}",
         &err), &err, INV);
  const char *nl_opts[] = {"ro\nlowerdir=/"};
  expect("get(option with newline)", cvmfs_driver_get(drv, "x", NULL, nl_opts, 1, &s, &err), &err, INV);
  expect("create_mapped(malformed mappings)", cvmfs_driver_create_mapped(drv, "x", NULL, false, NULL, 0, "[1]", &err), &err, INV);
  expect("create_from_template(bad parent)", cvmfs_driver_create_from_template(drv, "x", "t", BAD, false, &err), &err, INV);
  expect("get(bad label)", cvmfs_driver_get(drv, "x", BAD, NULL, 0, &s, &err), &err, INV);
  expect("get(bad option)", cvmfs_driver_get(drv, "x", NULL, bad_opts, 1, &s, &err), &err, INV);
  expect("get(NULL option)", cvmfs_driver_get(drv, "x", NULL, opts, 1, &s, &err), &err, INV);
  expect("diff(bad parent)", cvmfs_driver_diff(drv, "x", BAD, NULL, 1, &err), &err, INV);
  expect("diff(bad mappings)", cvmfs_driver_diff(drv, "x", NULL, BAD, 1, &err), &err, INV);
  expect("diff(malformed mappings)", cvmfs_driver_diff(drv, "x", NULL, "{\"uids\":", 1, &err), &err, INV);
  expect("diff(bad fd)", cvmfs_driver_diff(drv, "x", NULL, NULL, -1, &err), &err, INV);
  expect("changes(bad parent)", cvmfs_driver_changes(drv, "x", BAD, &s, &err), &err, INV);
  expect("diff_size(bad parent)", cvmfs_driver_diff_size(drv, "x", BAD, &n, &err), &err, INV);
  expect("update_id_map(bad to_container)", cvmfs_driver_update_id_map(drv, "x", BAD, NULL, &err), &err, INV);
  expect("update_id_map(bad to_host)", cvmfs_driver_update_id_map(drv, "x", NULL, BAD, &err), &err, INV);
  cvmfs_apply_diff_options ao = {BAD, NULL, false, false, 0};
  expect("apply_diff(bad mappings)", cvmfs_driver_apply_diff(drv, "x", 0, &ao, &n, &err), &err, INV);
  cvmfs_apply_diff_options ao2 = {NULL, BAD, false, false, 0};
  expect("apply_diff(bad label)", cvmfs_driver_apply_diff(drv, "x", 0, &ao2, &n, &err), &err, INV);
  expect("apply_diff(bad fd)", cvmfs_driver_apply_diff(drv, "x", -5, NULL, &n, &err), &err, INV);
  /* NULL outputs. */
  expect("exists(NULL out)", cvmfs_driver_exists(drv, "x", NULL, &err), &err, INV);
  expect("list_layers(NULL out)", cvmfs_driver_list_layers(drv, NULL, &err), &err, INV);
  expect("provide(NULL out)", cvmfs_driver_provide(drv, "image", "x", NULL, &err), &err, INV);
  expect("provide(NULL what)", cvmfs_driver_provide(drv, NULL, "x", &b, &err), &err, INV);
  expect("provide(bad what)", cvmfs_driver_provide(drv, "layer", "x", &b, &err), &err, INV);
  expect("get(NULL out)", cvmfs_driver_get(drv, "x", NULL, NULL, 0, NULL, &err), &err, INV);
  expect("status(NULL out)", cvmfs_driver_status(drv, NULL, &err), &err, INV);
  expect("metadata(NULL out)", cvmfs_driver_metadata(drv, "x", NULL, &err), &err, INV);
  expect("additional_image_stores(NULL out)", cvmfs_driver_additional_image_stores(drv, NULL, &err), &err, INV);
  expect("read_write_disk_usage(NULL size)", cvmfs_driver_read_write_disk_usage(drv, "x", NULL, &m, &err), &err, INV);
  expect("read_write_disk_usage(NULL inodes)", cvmfs_driver_read_write_disk_usage(drv, "x", &n, NULL, &err), &err, INV);
  expect("layer_content_dirs(NULL out)", cvmfs_driver_layer_content_dirs(drv, "x", NULL, &err), &err, INV);
  expect("layer_content_dir(NULL out)", cvmfs_driver_layer_content_dir(drv, "x", NULL, &err), &err, INV);
  expect("apply_diff(NULL out)", cvmfs_driver_apply_diff(drv, "x", 0, NULL, NULL, &err), &err, INV);
  expect("changes(NULL out)", cvmfs_driver_changes(drv, "x", NULL, NULL, &err), &err, INV);
  expect("diff_size(NULL out)", cvmfs_driver_diff_size(drv, "x", NULL, NULL, &err), &err, INV);
  CHECK(s == (char *)0x1 && n == -7 && m == -7, "outputs written on failure");

  /* Unknown layers. */
  expect("get(unknown)", cvmfs_driver_get(drv, "nope", NULL, NULL, 0, &s, &err), &err, CVMFS_RESULT_LAYER_UNKNOWN);
  expect("metadata(unknown)", cvmfs_driver_metadata(drv, "nope", &s, &err), &err, CVMFS_RESULT_LAYER_UNKNOWN);
  expect("create(missing parent)", cvmfs_driver_create(drv, "c", "nope", false, NULL, 0, &err), &err, CVMFS_RESULT_LAYER_UNKNOWN);
  expect("remove(unknown) is ok", cvmfs_driver_remove(drv, "nope", &err), &err, CVMFS_RESULT_OK);
  expect("exists(unknown)", cvmfs_driver_exists(drv, "nope", &b, &err), &err, CVMFS_RESULT_OK);
  CHECK(b == false, "exists(unknown) false");
  expect("status", cvmfs_driver_status(drv, &s, &err), &err, CVMFS_RESULT_OK);
  CHECK(strstr(s, "Backing Filesystem") != NULL, "status JSON: %s", s);
  cvmfs_string_free(s);
  s = NULL;

  cvmfs_driver_free(drv);
  char cmd[600];
  snprintf(cmd, sizeof cmd, "rm -rf '%s'", home);
  if (system(cmd) != 0) fprintf(stderr, "warning: could not remove %s\n", home);
}

/* A tiny ustar archive with one regular file, built by hand. */
static size_t make_tar(unsigned char *buf, const char *name, const char *data) {
  memset(buf, 0, 2048 + 512);
  unsigned char *h = buf;
  strcpy((char *)h, name);
  strcpy((char *)h + 100, "0000644");
  strcpy((char *)h + 108, "0000000");
  strcpy((char *)h + 116, "0000000");
  sprintf((char *)h + 124, "%011o", (unsigned)strlen(data));
  strcpy((char *)h + 136, "00000000000");
  h[156] = '0';
  memcpy(h + 257, "ustar\0" "00", 8);
  memset(h + 148, ' ', 8);
  unsigned sum = 0;
  for (int i = 0; i < 512; i++) sum += h[i];
  sprintf((char *)h + 148, "%06o", sum);
  h[155] = ' ';
  memcpy(buf + 512, data, strlen(data));
  return 512 + 512 + 1024; /* header, one data block, two zero blocks */
}

static int is_mounted(const char *path) {
  char parent[1024];
  snprintf(parent, sizeof parent, "%s/..", path);
  struct stat a, b;
  if (stat(path, &a) != 0 || stat(parent, &b) != 0) return 0;
  return a.st_dev != b.st_dev;
}

static void smoke(void) {
  if (geteuid() != 0) {
    printf("SKIP: c-abi smoke: needs root\n");
    skipped++;
    return;
  }
  cvmfs_error *err = NULL;
  char home[] = "/tmp/cvmfs-abi-smoke-XXXXXX";
  if (!mkdtemp(home)) {
    CHECK(0, "mkdtemp");
    return;
  }
  char h[512], r[512];
  snprintf(h, sizeof h, "%s/graph/cvmfs", home);
  snprintf(r, sizeof r, "%s/run", home);
  cvmfs_driver *d = NULL;
  expect("smoke new", cvmfs_driver_new(h, r, NULL, 0, &d, &err), &err, CVMFS_RESULT_OK);
  if (!d) return;
  cvmfs_driver *d2 = NULL;
  expect("smoke second new on the same home", cvmfs_driver_new(h, r, NULL, 0, &d2, &err), &err, CVMFS_RESULT_OK);

  expect("create base", cvmfs_driver_create(d, "base", NULL, false, NULL, 0, &err), &err, CVMFS_RESULT_OK);
  bool ex = false;
  expect("exists base (second handle)", cvmfs_driver_exists(d2, "base", &ex, &err), &err, CVMFS_RESULT_OK);
  CHECK(ex, "base exists");

  /* apply_diff from a pipe; the library must not close our descriptor. */
  unsigned char tar[4096];
  size_t len = make_tar(tar, "hello.txt", "hi there\n");
  int p[2];
  CHECK(pipe(p) == 0, "pipe");
  CHECK(write(p[1], tar, len) == (ssize_t)len, "write tar");
  close(p[1]);
  int64_t size = -1;
  expect("apply_diff", cvmfs_driver_apply_diff(d, "base", p[0], NULL, &size, &err), &err, CVMFS_RESULT_OK);
  CHECK(size == 9, "apply_diff size %lld", (long long)size);
  CHECK(fcntl(p[0], F_GETFD) != -1, "caller's fd still open");
  close(p[0]);

  /* Mount counts are shared between processes: a child mounts "base" and exits
     without put; our get joins that mount and our put leaves it for the child. */
  pid_t cpid = fork();
  if (cpid == 0) {
    cvmfs_driver *c = NULL;
    char *cm = NULL;
    if (cvmfs_driver_new(h, r, NULL, 0, &c, NULL) != CVMFS_RESULT_OK) _exit(2);
    if (cvmfs_driver_get(c, "base", NULL, NULL, 0, &cm, NULL) != CVMFS_RESULT_OK) _exit(3);
    _exit(is_mounted(cm) ? 0 : 4);
  }
  int cst = 0;
  waitpid(cpid, &cst, 0);
  CHECK(WIFEXITED(cst) && WEXITSTATUS(cst) == 0, "child process get (status %d)", cst);
  char *bm = NULL;
  expect("get base after child", cvmfs_driver_get(d, "base", NULL, NULL, 0, &bm, &err), &err, CVMFS_RESULT_OK);
  if (bm) {
    expect("put base once", cvmfs_driver_put(d, "base", &err), &err, CVMFS_RESULT_OK);
    CHECK(is_mounted(bm), "still mounted for the child's get");
    expect("put base for the child", cvmfs_driver_put(d2, "base", &err), &err, CVMFS_RESULT_OK);
    CHECK(!is_mounted(bm), "unmounted after the last put");
    cvmfs_string_free(bm);
  }

  expect("create_mapped", cvmfs_driver_create_mapped(d, "mapped", NULL, false, NULL, 0,
         "{\"uids\":[{\"container_id\":0,\"host_id\":100000,\"size\":65536}],\"gids\":[{\"container_id\":0,\"host_id\":200000,\"size\":65536}]}",
         &err), &err, CVMFS_RESULT_OK);
  char *mdir = NULL;
  expect("content dir of mapped", cvmfs_driver_layer_content_dir(d, "mapped", &mdir, &err), &err, CVMFS_RESULT_OK);
  if (mdir) {
    struct stat st;
    CHECK(stat(mdir, &st) == 0 && st.st_uid == 100000 && st.st_gid == 200000, "mapped root owner %u:%u", st.st_uid, st.st_gid);
    cvmfs_string_free(mdir);
  }
  expect("remove mapped", cvmfs_driver_remove(d, "mapped", &err), &err, CVMFS_RESULT_OK);

  expect("create top", cvmfs_driver_create(d, "top", "base", true, NULL, 0, &err), &err, CVMFS_RESULT_OK);
  char *mnt = NULL;
  expect("get top", cvmfs_driver_get(d, "top", NULL, NULL, 0, &mnt, &err), &err, CVMFS_RESULT_OK);
  if (mnt) {
    char f[1024];
    snprintf(f, sizeof f, "%s/hello.txt", mnt);
    struct stat st;
    CHECK(stat(f, &st) == 0 && st.st_size == 9, "hello.txt visible in %s", mnt);
    snprintf(f, sizeof f, "%s/new.txt", mnt);
    FILE *fp = fopen(f, "w");
    CHECK(fp != NULL, "write into mount");
    if (fp) { fputs("new\n", fp); fclose(fp); }
    cvmfs_string_free(mnt);
  }
  expect("put top", cvmfs_driver_put(d, "top", &err), &err, CVMFS_RESULT_OK);

  char *json = NULL;
  expect("changes top", cvmfs_driver_changes(d, "top", "base", &json, &err), &err, CVMFS_RESULT_OK);
  CHECK(json && strcmp(json, "[{\"path\":\"/new.txt\",\"kind\":1}]") == 0, "changes JSON %s", json ? json : "(null)");
  cvmfs_string_free(json);
  expect("changes top vs other parent", cvmfs_driver_changes(d, "top", "zzz", &json, &err), &err, CVMFS_RESULT_NOT_SUPPORTED);

  /* diff into a pipe read by a child process. */
  CHECK(pipe(p) == 0, "pipe");
  pid_t pid = fork();
  if (pid == 0) {
    close(p[1]);
    unsigned char b[8192];
    size_t total = 0;
    ssize_t k;
    int found = 0;
    while ((k = read(p[0], b + (total < 4096 ? total : 0), 4096)) > 0) {
      if (total < 4096 && memmem(b, total + k, "new.txt", 7)) found = 1;
      total += k;
    }
    _exit(found && total >= 1024 ? 0 : 1);
  }
  close(p[0]);
  expect("diff top", cvmfs_driver_diff(d, "top", "base", NULL, p[1], &err), &err, CVMFS_RESULT_OK);
  CHECK(fcntl(p[1], F_GETFD) != -1, "caller's fd still open after diff");
  close(p[1]);
  int status = 0;
  waitpid(pid, &status, 0);
  CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0, "diff tar holds new.txt");

  expect("layer_content_dirs", cvmfs_driver_layer_content_dirs(d, "top", &json, &err), &err, CVMFS_RESULT_OK);
  CHECK(json && strstr(json, "/layers/top/diff\",\"") && strstr(json, "/layers/base/diff\"]"), "content dirs %s", json ? json : "(null)");
  cvmfs_string_free(json);
  expect("list_layers", cvmfs_driver_list_layers(d, &json, &err), &err, CVMFS_RESULT_OK);
  CHECK(json && strcmp(json, "[\"top\",\"base\"]") == 0, "list %s", json ? json : "(null)");
  cvmfs_string_free(json);
  expect("remove top", cvmfs_driver_remove(d, "top", &err), &err, CVMFS_RESULT_OK);
  expect("remove base", cvmfs_driver_remove(d2, "base", &err), &err, CVMFS_RESULT_OK);
  expect("cleanup", cvmfs_driver_cleanup(d, &err), &err, CVMFS_RESULT_OK);
  cvmfs_driver_free(d);
  cvmfs_driver_free(d2);
  char cmd[600];
  snprintf(cmd, sizeof cmd, "rm -rf '%s'", home);
  if (system(cmd) != 0) fprintf(stderr, "warning: could not remove %s\n", home);
}

int main(void) {
  null_and_utf8_checks();
  smoke();
  printf("c-abi: %d passed, %d failed, %d skipped\n", passed, failed, skipped);
  return failed ? 1 : 0;
}
