// Drives quarry's POST /v1/chat/completions with LangChain JS's ChatOpenAI, unmodified, the way an
// integrator's chain would: configuration.baseURL at quarry, a service API key with the
// on_behalf_of scope, the user named in X-Quarry-User. Prints one JSON object saying where quarry's
// citations surface for a LangChain user:
//   {"plain":  {"content", "context_in_additional_kwargs", "context_in_response_metadata",
//               "citations_anywhere"},            <- a default ChatOpenAI
//    "raw":    {"content", "context", "citations"},  <- __includeRawResponse: true, non-streamed
//    "stream": {"content", "context", "contexts"},    <- __includeRawResponse: true, streamed
//    "options_sent": {"temperature", "max_tokens", "stop"}}
// The C test (tests/test_api.c, case langchain_client) checks what it printed.
//
// usage: QUARRY_URL=http://127.0.0.1:PORT QUARRY_KEY=qk_... QUARRY_USER=alice node run.mjs QUESTION
import { ChatOpenAI } from '@langchain/openai';
import { HumanMessage, SystemMessage } from '@langchain/core/messages';

const url = process.env.QUARRY_URL;
const key = process.env.QUARRY_KEY;
const question = process.argv[2];
if (!url || !key || !question) {
  console.error('usage: QUARRY_URL=... QUARRY_KEY=... [QUARRY_USER=uid] node run.mjs QUESTION');
  process.exit(2);
}

const make = (extra) =>
  new ChatOpenAI({
    model: 'quarry',
    apiKey: key,
    maxRetries: 0,
    timeout: 30000,
    temperature: 0.1,
    maxTokens: 200,
    configuration: {
      baseURL: `${url}/v1`,
      defaultHeaders: process.env.QUARRY_USER ? { 'X-Quarry-User': process.env.QUARRY_USER } : {},
    },
    ...extra,
  });

const messages = [new SystemMessage('You are a helpful assistant.'), new HumanMessage(question)];
const holds = (obj, name) => JSON.stringify(obj ?? {}).includes(`"${name}"`);

// a default ChatOpenAI: the fields quarry adds to the message and the completion are not in
// LangChain's mapping (it keeps tool calls, audio and reasoning in additional_kwargs, and model,
// usage and finish reason in response_metadata)
const plain = await make({}).invoke(messages);

// with __includeRawResponse the whole completion rides along in additional_kwargs.__raw_response
const raw = await make({ __includeRawResponse: true }).invoke(messages, { stop: ['NEVER-SEEN'] });
const rawResponse = raw.additional_kwargs.__raw_response;

let content = '';
let context = null;
let contexts = 0;
for await (const chunk of await make({ __includeRawResponse: true, streaming: true }).stream(messages)) {
  content += typeof chunk.content === 'string' ? chunk.content : '';
  const delta = chunk.additional_kwargs?.__raw_response?.choices?.[0]?.delta;
  if (delta?.context) {
    context = delta.context;
    contexts++;
  }
}

console.log(
  JSON.stringify({
    plain: {
      content: plain.content,
      context_in_additional_kwargs: holds(plain.additional_kwargs, 'context'),
      context_in_response_metadata: holds(plain.response_metadata, 'context'),
      citations_anywhere: holds(plain.additional_kwargs, 'citations') || holds(plain.response_metadata, 'citations'),
    },
    raw: {
      content: raw.content,
      context: rawResponse?.choices?.[0]?.message?.context ?? null,
      citations: rawResponse?.citations ?? null,
    },
    stream: { content, context, contexts },
  }),
);
