/*
 * Helpers shared by tests that run programs: the quarry binary, curl, shell commands.
 */
#ifndef QUARRY_TEST_UTIL_H
#define QUARRY_TEST_UTIL_H

#include "core/core.h"

/* Runs cmd with /bin/sh and puts what it writes on stdout into out (reset first; NULL discards
 * it). Returns the command's exit status, or -1 when it could not run or died from a signal. */
int test_capture(const char *cmd, qr_buf *out);

#endif
