// quarry-chat.js: the task pane's chat module is quarry's web console's, ui/js/chat-core.js (one
// copy: the request body, the SSE parser, citations, error sentences). In this repository it is
// re-exported from there; to host the task pane, copy ui/js/chat-core.js over this file (or serve
// this folder with ../../ui/js/ beside it). quarry itself serves the same file at
// /ui/js/chat-core.js.
export * from '../../ui/js/chat-core.js';
