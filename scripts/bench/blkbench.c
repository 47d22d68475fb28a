/*
 * blkbench: a small static disk benchmark for the L2 guest of `npm run bench` (busybox has no fio).
 *
 *   blkbench DEVICE MODE BLOCK_BYTES THREADS SECONDS
 *     MODE: seqread | seqwrite | randread | randwrite
 *
 * O_DIRECT, one synchronous pread/pwrite at a time per thread (queue depth = THREADS), buffers aligned
 * to 4 KiB. Sequential modes split the device into THREADS stripes; random modes pick block-aligned
 * offsets with a per-thread xorshift. Prints one line:
 *   BLKBENCH <mode> bs=<bytes> threads=<n> secs=<s> ops=<n> iops=<n> mbps=<MB/s> errors=<n>
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <linux/fs.h>
#include <time.h>
#include <unistd.h>

struct job {
  int fd;
  int write;
  int random;
  size_t bs;
  uint64_t lo, hi; /* byte range [lo, hi) of this thread */
  double until;
  uint64_t ops, errors;
  uint32_t seed;
};

static double now(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

static void *run(void *arg) {
  struct job *j = arg;
  void *buf;
  if (posix_memalign(&buf, 4096, j->bs)) return NULL;
  memset(buf, 0x5a, j->bs);
  uint64_t blocks = (j->hi - j->lo) / j->bs, next = 0;
  uint32_t x = j->seed | 1;
  while (now() < j->until) {
    for (int k = 0; k < 16; k++) {
      uint64_t b;
      if (j->random) {
        x ^= x << 13; x ^= x >> 17; x ^= x << 5;
        b = ((uint64_t)x * 2654435761u) % blocks;
      } else {
        b = next++;
        if (next >= blocks) next = 0;
      }
      off_t off = (off_t)(j->lo + b * j->bs);
      ssize_t n = j->write ? pwrite(j->fd, buf, j->bs, off) : pread(j->fd, buf, j->bs, off);
      if (n != (ssize_t)j->bs) j->errors++;
      else j->ops++;
    }
  }
  free(buf);
  return NULL;
}

int main(int argc, char **argv) {
  if (argc != 6) {
    fprintf(stderr, "usage: blkbench DEVICE seqread|seqwrite|randread|randwrite BLOCK_BYTES THREADS SECONDS\n");
    return 2;
  }
  const char *mode = argv[2];
  int write = strstr(mode, "write") != NULL, random = strncmp(mode, "rand", 4) == 0;
  size_t bs = strtoul(argv[3], NULL, 0);
  int threads = atoi(argv[4]);
  double secs = atof(argv[5]);
  if (bs < 512 || bs % 512 || threads < 1 || threads > 256 || secs <= 0) { fprintf(stderr, "blkbench: bad arguments\n"); return 2; }
  int fd = open(argv[1], (write ? O_RDWR : O_RDONLY) | O_DIRECT);
  if (fd < 0) { fprintf(stderr, "blkbench: open %s: %s\n", argv[1], strerror(errno)); return 1; }
  uint64_t size = 0;
  if (ioctl(fd, BLKGETSIZE64, &size) < 0) size = (uint64_t)lseek(fd, 0, SEEK_END);
  if (size < bs * (uint64_t)threads) { fprintf(stderr, "blkbench: device too small\n"); return 1; }
  struct job *jobs = calloc((size_t)threads, sizeof *jobs);
  pthread_t *tids = calloc((size_t)threads, sizeof *tids);
  double t0 = now();
  uint64_t stripe = (size / (uint64_t)threads) / bs * bs;
  for (int i = 0; i < threads; i++) {
    jobs[i] = (struct job){ .fd = fd, .write = write, .random = random, .bs = bs, .until = t0 + secs, .seed = 0x9e3779b9u * (uint32_t)(i + 1) };
    jobs[i].lo = random ? 0 : stripe * (uint64_t)i;
    jobs[i].hi = random ? size / bs * bs : jobs[i].lo + stripe;
    pthread_create(&tids[i], NULL, run, &jobs[i]);
  }
  uint64_t ops = 0, errors = 0;
  for (int i = 0; i < threads; i++) { pthread_join(tids[i], NULL); ops += jobs[i].ops; errors += jobs[i].errors; }
  double el = now() - t0;
  printf("BLKBENCH %s bs=%zu threads=%d secs=%.2f ops=%llu iops=%.0f mbps=%.1f errors=%llu\n", mode, bs, threads, el,
         (unsigned long long)ops, (double)ops / el, (double)ops * (double)bs / el / 1e6, (unsigned long long)errors);
  return errors ? 1 : 0;
}
