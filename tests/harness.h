/*
 * A minimal test harness. A test file defines cases with TEST(name) and checks with CHECK*;
 * the binary runs every case, or the one named on its command line (ctest registers each case
 * on its own, see tests/CMakeLists.txt). A failed check ends its case and is reported with file
 * and line; the exit status is non-zero when any case failed.
 */
#ifndef QUARRY_TEST_HARNESS_H
#define QUARRY_TEST_HARNESS_H

#include <stdbool.h>
#include <stdio.h>
#include <string.h>

typedef void (*harness_fn)(void);
void harness_register(const char *name, harness_fn fn);
void harness_fail(const char *file, int line, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
bool harness_failed(void);

#define TEST(name)                                                 \
    static void test_##name(void);                                 \
    __attribute__((constructor)) static void register_##name(void) \
    {                                                              \
        harness_register(#name, test_##name);                      \
    }                                                              \
    static void test_##name(void)

#define CHECK(cond)                                        \
    do {                                                   \
        if (!(cond)) {                                     \
            harness_fail(__FILE__, __LINE__, "%s", #cond); \
            return;                                        \
        }                                                  \
    } while (0)

#define CHECK_MSG(cond, ...)                               \
    do {                                                   \
        if (!(cond)) {                                     \
            harness_fail(__FILE__, __LINE__, __VA_ARGS__); \
            return;                                        \
        }                                                  \
    } while (0)

#define CHECK_INT(a, b)                                                                             \
    do {                                                                                            \
        long long check_a_ = (long long)(a), check_b_ = (long long)(b);                             \
        if (check_a_ != check_b_) {                                                                 \
            harness_fail(__FILE__, __LINE__, "%s == %s: %lld != %lld", #a, #b, check_a_, check_b_); \
            return;                                                                                 \
        }                                                                                           \
    } while (0)

#define CHECK_STR(a, b)                                                                   \
    do {                                                                                  \
        const char *check_a_ = (a), *check_b_ = (b);                                      \
        if (!check_a_ || !check_b_ || strcmp(check_a_, check_b_) != 0) {                  \
            harness_fail(__FILE__, __LINE__, "%s == %s: \"%s\" != \"%s\"", #a, #b,        \
                         check_a_ ? check_a_ : "(null)", check_b_ ? check_b_ : "(null)"); \
            return;                                                                       \
        }                                                                                 \
    } while (0)

/* Checks that a qr_status call succeeded, printing err on failure. */
#define CHECK_OK(call, err)                                                                  \
    do {                                                                                     \
        int check_st_ = (int)(call);                                                         \
        if (check_st_ != 0) {                                                                \
            harness_fail(__FILE__, __LINE__, "%s failed (%d): %s", #call, check_st_, (err)); \
            return;                                                                          \
        }                                                                                    \
    } while (0)

#endif
