/*
 * The web console's files, compiled in by cmake/EmbedUi.cmake from ui/ (api's internal header:
 * only api/ui.c and the generated ui_assets.c include it).
 */
#ifndef QUARRY_API_UI_ASSETS_H
#define QUARRY_API_UI_ASSETS_H

#include <stddef.h>

typedef struct {
    const char *path; /* relative to ui/, "/"-separated: "index.html", "js/app.js" */
    const char *content_type;
    const unsigned char *data; /* followed by a NUL not counted in len */
    size_t len;
} api_ui_asset;

extern const api_ui_asset api_ui_assets[]; /* ends with a NULL path */
extern const unsigned api_ui_nassets;

#endif
