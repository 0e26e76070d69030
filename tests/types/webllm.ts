// Code written against WebLLM's chat types (`@mlc-ai/web-llm`, types only), with quantweb's Engine
// where the app had `CreateMLCEngine(...)`: the chat calls compile unchanged, and quantweb's
// `chat.completions.create` is usable wherever WebLLM's is expected. Never run, only type-checked.
import type {
  ChatCompletion,
  ChatCompletionChunk,
  ChatCompletionMessageParam,
  ChatCompletionRequest,
  ChatCompletionRequestBase,
  ChatCompletionRequestNonStreaming,
  ChatCompletionRequestStreaming,
  ChatCompletionTool,
  MLCEngineInterface,
} from '@mlc-ai/web-llm';
import { Engine, type ChatCompletionRequest as QuantwebRequest, type ChatMessage } from '../../www/quantweb.js';

export async function webllmApp(): Promise<string> {
  const engine = await Engine.load('/models/SmolLM2-135M-Instruct.Q4_1.gguf');

  // WebLLM's create, overloads and all: every one of them is matched by one of ours.
  const create: MLCEngineInterface['chat']['completions']['create'] = engine.chat.completions.create;

  const messages: ChatCompletionMessageParam[] = [
    { role: 'system', content: 'You are terse.' },
    { role: 'user', content: 'What is 2 + 2?' },
    { role: 'assistant', content: null, tool_calls: [{ id: 'call_1', type: 'function', function: { name: 'add', arguments: '{}' } }] },
    { role: 'tool', tool_call_id: 'call_1', content: '4' },
    { role: 'assistant' },
    { role: 'user', content: [{ type: 'text', text: 'And this?' }, { type: 'image_url', image_url: { url: 'data:image/png;base64,' } }] },
    { role: 'user', content: [{ type: 'input_audio', input_audio: { data: new Float32Array(1), format: 'pcm_f32', sample_rate: 16000 } }] },
  ];

  const request: ChatCompletionRequestNonStreaming = { messages, temperature: 0, max_tokens: 64, seed: 1, n: 1, logprobs: false };
  const reply: ChatCompletion = await engine.chat.completions.create(request);
  let text = reply.choices[0].message.content ?? '';

  // WebLLM's structured output: JSON mode with a schema string, and a grammar.
  for (const response_format of [
    { type: 'json_object', schema: JSON.stringify({ type: 'object', properties: { n: { type: 'integer' } } }) },
    { type: 'grammar', grammar: 'root ::= "yes" | "no"' },
  ] satisfies ChatCompletionRequestNonStreaming['response_format'][]) {
    const structured: ChatCompletion = await engine.chat.completions.create({ ...request, response_format });
    text += structured.choices[0].message.content ?? '';
  }
  text += ` ${reply.usage?.extra.decode_tokens_per_s} tok/s`;

  // WebLLM's function calling: tools in, tool_calls out, results back as tool messages.
  const tools: ChatCompletionTool[] = [{ type: 'function', function: { name: 'add', description: 'a + b', parameters: { type: 'object' } } }];
  const called: ChatCompletion = await engine.chat.completions.create({ ...request, tools, tool_choice: 'auto' });
  for (const call of called.choices[0].message.tool_calls ?? []) {
    messages.push({ role: 'assistant', content: null, tool_calls: [call] }, { role: 'tool', tool_call_id: call.id, content: '4' });
  }

  const streamed: ChatCompletionRequestStreaming = { messages, stream: true, stream_options: { include_usage: true } };
  const chunks: AsyncIterable<ChatCompletionChunk> = await create(streamed);
  for await (const chunk of chunks) {
    text += chunk.choices[0]?.delta.content ?? '';
    if (chunk.usage) text += ` (${chunk.usage.extra.time_to_first_token_s} s to the first token)`;
  }

  const either = async (r: ChatCompletionRequest): Promise<AsyncIterable<ChatCompletionChunk> | ChatCompletion> => engine.chat.completions.create(r);
  await either({ messages, stream: false });

  // @ts-expect-error a streamed answer is not a ChatCompletion (the overloads tell them apart)
  const notACompletion: ChatCompletion = await engine.chat.completions.create(streamed);
  // @ts-expect-error WebLLM's usage requires `extra`: its types are real, not `any`
  const noExtra: ChatCompletion['usage'] = { prompt_tokens: 1, completion_tokens: 1, total_tokens: 2 };
  return `${text} ${notACompletion.id} ${noExtra?.total_tokens}`;
}

type KeysOfAny<T> = T extends unknown ? keyof T : never;
type MissingRequestFields = Exclude<keyof ChatCompletionRequestBase, keyof QuantwebRequest>;
type MissingMessageFields = Exclude<KeysOfAny<ChatCompletionMessageParam>, keyof ChatMessage>;
export const allRequestFieldsDeclared: [MissingRequestFields] extends [never] ? true : MissingRequestFields = true;
export const allMessageFieldsDeclared: [MissingMessageFields] extends [never] ? true : MissingMessageFields = true;
