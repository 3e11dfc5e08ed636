// Drives quarry's POST /v1/chat/completions with the official openai npm client, unmodified, the
// way an office-tool plugin would: a service API key with the on_behalf_of scope, the user named
// in X-Quarry-User. Asks once without and once with streaming, reads the model list, retrieves a
// model and one that does not exist, tries a bad key, and prints one JSON object:
//   {"plain": {"content", "finish_reason", "citations", "context", "object", "usage", "model"},
//    "stream": {"content", "finish_reason", "citations", "context", "contexts", "chunks", "roles"},
//    "models": {"list", "retrieved", "missing": {"class", "status", "type", "code", "param"}},
//    "bad_key": {"class", "status", "type", "code"}}
// The C test (tests/test_api.c, case openai_npm_client) checks what it printed.
//
// usage: QUARRY_URL=http://127.0.0.1:PORT QUARRY_KEY=qk_... QUARRY_USER=alice node run.mjs QUESTION
import OpenAI from 'openai';

const url = process.env.QUARRY_URL;
const key = process.env.QUARRY_KEY;
const question = process.argv[2];
if (!url || !key || !question) {
  console.error('usage: QUARRY_URL=... QUARRY_KEY=... [QUARRY_USER=uid] node run.mjs QUESTION');
  process.exit(2);
}

const client = new OpenAI({
  baseURL: `${url}/v1`,
  apiKey: key,
  maxRetries: 0,
  timeout: 30000,
  defaultHeaders: process.env.QUARRY_USER ? { 'X-Quarry-User': process.env.QUARRY_USER } : {},
});

const messages = [
  { role: 'system', content: 'You are a helpful assistant.' },
  { role: 'user', content: question },
];

const plain = await client.chat.completions.create({ model: 'quarry', messages });

const stream = await client.chat.completions.create({
  model: 'quarry',
  messages,
  stream: true,
  stream_options: { include_usage: true },
});
let content = '';
let finish = null;
let citations = null;
let chunks = 0;
const roles = [];
let usage = null;
let context = null;
let contexts = 0;
for await (const chunk of stream) {
  chunks++;
  if (chunk.usage) usage = chunk.usage;
  const choice = chunk.choices[0];
  if (!choice) continue;
  if (choice.delta?.role) roles.push(choice.delta.role);
  if (choice.delta?.content) content += choice.delta.content;
  if (choice.finish_reason) finish = choice.finish_reason;
  if (chunk.citations) citations = chunk.citations;
  if (choice.delta?.context) {
    context = choice.delta.context;
    contexts++;
  }
}

// what an SDK user sees of an error: its class and the fields of OpenAI's error object
const described = (err) => ({
  class: err?.constructor?.name,
  notFound: err instanceof OpenAI.NotFoundError,
  authentication: err instanceof OpenAI.AuthenticationError,
  status: err?.status,
  type: err?.type,
  code: err?.code,
  param: err?.param,
});

const models = (await client.models.list()).data.map((m) => m.id);
const retrieved = await client.models.retrieve('quarry');
let missing = null;
try {
  await client.models.retrieve('nope');
} catch (err) {
  missing = described(err);
}
let badKey = null;
try {
  const stranger = new OpenAI({ baseURL: `${url}/v1`, apiKey: 'qk_not_a_key', maxRetries: 0, timeout: 30000 });
  await stranger.chat.completions.create({ model: 'quarry', messages });
} catch (err) {
  badKey = described(err);
}

console.log(
  JSON.stringify({
    plain: {
      object: plain.object,
      content: plain.choices[0].message.content,
      finish_reason: plain.choices[0].finish_reason,
      citations: plain.citations,
      // Azure OpenAI's "On Your Data" shape: a field the SDK's types do not know, passed through
      context: plain.choices[0].message.context,
      usage: plain.usage,
      model: plain.model,
    },
    stream: { content, finish_reason: finish, citations, context, contexts, chunks, roles, usage },
    models: { list: models, retrieved, missing },
    bad_key: badKey,
  }),
);
