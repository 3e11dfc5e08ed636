/*
 * The circuit breaker: after inference.breaker_failures consecutive failed calls the backend is
 * left alone for inference.breaker_cooldown_ms, so that a dead or overloaded backend costs each
 * question an instant extractive answer instead of a full timeout. After the cool-down one probe
 * call is let through; its success closes the breaker, its failure reopens it for another
 * cool-down. The clock is passed in, so the state machine is tested without sleeping.
 */
#include "inference/inference_int.h"

void infer_breaker_init(infer_breaker *b, int threshold, uint64_t cooldown_ms)
{
    b->state = INFER_BREAKER_CLOSED;
    b->failures = 0;
    b->threshold = threshold > 0 ? threshold : 1;
    b->cooldown_ms = cooldown_ms;
    b->opened_at_ms = 0;
    b->probe_in_flight = false;
}

static bool cooled_down(const infer_breaker *b, uint64_t now_ms)
{
    return now_ms >= b->opened_at_ms + b->cooldown_ms;
}

bool infer_breaker_allow(infer_breaker *b, uint64_t now_ms, bool *is_probe)
{
    *is_probe = false;
    switch (b->state) {
    case INFER_BREAKER_CLOSED: return true;
    case INFER_BREAKER_OPEN:
        if (!cooled_down(b, now_ms))
            return false;
        b->state = INFER_BREAKER_HALF_OPEN;
        b->probe_in_flight = false;
        /* the first caller after the cool-down is the probe */
        __attribute__((fallthrough));
    case INFER_BREAKER_HALF_OPEN:
        if (b->probe_in_flight)
            return false;
        b->probe_in_flight = true;
        *is_probe = true;
        return true;
    }
    return false;
}

void infer_breaker_record(infer_breaker *b, uint64_t now_ms, infer_outcome outcome, bool was_probe)
{
    if (was_probe)
        b->probe_in_flight = false;
    switch (outcome) {
    case INFER_OUTCOME_SUCCESS:
        b->state = INFER_BREAKER_CLOSED;
        b->failures = 0;
        break;
    case INFER_OUTCOME_FAILURE:
        if (b->state == INFER_BREAKER_HALF_OPEN) {
            /* A failed probe, or a call begun before the breaker opened that failed during the
             * half-open window: either way the backend still fails, so start a new cool-down. */
            b->state = INFER_BREAKER_OPEN;
            b->opened_at_ms = now_ms;
        } else if (b->state == INFER_BREAKER_CLOSED && ++b->failures >= b->threshold) {
            b->state = INFER_BREAKER_OPEN;
            b->opened_at_ms = now_ms;
        }
        /* already open: calls that started before it opened do not extend the cool-down */
        break;
    case INFER_OUTCOME_NEUTRAL: break;
    }
}

infer_breaker_state infer_breaker_peek(const infer_breaker *b, uint64_t now_ms)
{
    if (b->state == INFER_BREAKER_OPEN && cooled_down(b, now_ms))
        return INFER_BREAKER_HALF_OPEN;
    return b->state;
}

uint64_t infer_breaker_wait_ms(const infer_breaker *b, uint64_t now_ms)
{
    if (b->state != INFER_BREAKER_OPEN || cooled_down(b, now_ms))
        return 0;
    return b->opened_at_ms + b->cooldown_ms - now_ms;
}

const char *infer_breaker_state_name(infer_breaker_state state)
{
    switch (state) {
    case INFER_BREAKER_CLOSED: return "closed";
    case INFER_BREAKER_OPEN: return "open";
    case INFER_BREAKER_HALF_OPEN: return "half_open";
    }
    return "unknown";
}
