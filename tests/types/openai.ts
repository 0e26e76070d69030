// Code written against the official `openai` SDK's types (4.x), with quantweb's Engine where the
// app had `new OpenAI()`. It must compile unchanged: requests typed as the SDK's params go in, and
// what comes back is assigned to the SDK's result types. Never run, only type-checked.
import type {
  ChatCompletion,
  ChatCompletionChunk,
  ChatCompletionCreateParams,
  ChatCompletionCreateParamsBase,
  ChatCompletionCreateParamsNonStreaming,
  ChatCompletionCreateParamsStreaming,
  ChatCompletionMessage,
  ChatCompletionMessageParam,
  ChatCompletionMessageToolCall,
  ChatCompletionTokenLogprob,
  ChatCompletionTool,
  ChatCompletionToolChoiceOption,
} from 'openai/resources/chat/completions';
import { Engine, type ChatCompletionRequest, type ChatMessage } from '../../www/quantweb.js';

export async function openaiApp(): Promise<string> {
  const client = await Engine.load('/models/SmolLM2-135M-Instruct.Q4_1.gguf');

  // Every message kind the SDK has; assistant content null or absent, a tool message.
  const messages: ChatCompletionMessageParam[] = [
    { role: 'developer', content: 'Answer in one line.' },
    { role: 'system', content: [{ type: 'text', text: 'You are terse.' }] },
    { role: 'user', content: 'What is 2 + 2?', name: 'ada' },
    { role: 'assistant', content: null, tool_calls: [{ id: 'call_1', type: 'function', function: { name: 'add', arguments: '{"a":2,"b":2}' } }] },
    { role: 'tool', tool_call_id: 'call_1', content: '4' },
    { role: 'assistant', refusal: null },
    { role: 'assistant', content: [{ type: 'text', text: '4' }, { type: 'refusal', refusal: 'no' }] },
    { role: 'user', content: [{ type: 'text', text: 'And this?' }, { type: 'image_url', image_url: { url: 'data:image/png;base64,' } }] },
    { role: 'user', content: [{ type: 'input_audio', input_audio: { data: '', format: 'wav' } }, { type: 'file', file: { file_id: 'f' } }] },
    { role: 'function', name: 'add', content: '4' },
  ];

  // Non-streamed, with every sampling field the SDK has.
  const params: ChatCompletionCreateParamsNonStreaming = {
    model: 'gpt-4o-mini',
    messages,
    max_tokens: 64,
    max_completion_tokens: null,
    temperature: 0,
    top_p: 0.9,
    seed: 1,
    stop: ['\n'],
    n: 1,
    logprobs: true,
    top_logprobs: 3,
    user: 'u',
  };
  const completion: ChatCompletion = await client.chat.completions.create(params);

  // Structured output, in each of the SDK's response_format shapes.
  const formats: ChatCompletionCreateParams['response_format'][] = [
    { type: 'text' },
    { type: 'json_object' },
    {
      type: 'json_schema',
      json_schema: { name: 'answer', strict: true, schema: { type: 'object', properties: { n: { type: 'integer' } }, required: ['n'] } },
    },
  ];
  for (const response_format of formats) {
    const structured: ChatCompletion = await client.chat.completions.create({ ...params, response_format });
    JSON.parse(structured.choices[0].message.content ?? '{}');
  }
  const message: ChatCompletionMessage = completion.choices[0].message;
  let text = message.content ?? message.refusal ?? '';
  const finish: ChatCompletion.Choice['finish_reason'] = completion.choices[0].finish_reason;
  const first: ChatCompletionTokenLogprob | undefined = completion.choices[0].logprobs?.content?.[0];
  const alternatives: number = first ? first.top_logprobs.length + first.logprob : 0;
  const tokens: number = (completion.usage?.total_tokens ?? 0) + (completion.usage?.prompt_tokens_details?.cached_tokens ?? 0);

  // Streamed, with the SDK's request options (an abort signal) as the second argument.
  const controller = new AbortController();
  const streamed: ChatCompletionCreateParamsStreaming = { model: 'gpt-4o-mini', messages, stream: true, stream_options: { include_usage: true } };
  const stream = await client.chat.completions.create(streamed, { signal: controller.signal });
  for await (const chunk of stream) {
    const c: ChatCompletionChunk = chunk;
    text += c.choices[0]?.delta?.content ?? '';
    if (c.usage) text += ` (${c.usage.completion_tokens} tokens)`;
  }

  // Params whose `stream` is only known at run time.
  const either = async (p: ChatCompletionCreateParams): Promise<string> => {
    const res = await client.chat.completions.create(p);
    if (Symbol.asyncIterator in res) {
      let out = '';
      for await (const chunk of res) out += (chunk satisfies ChatCompletionChunk).choices[0]?.delta.content ?? '';
      return out;
    }
    return (res satisfies ChatCompletion).choices[0].message.content ?? '';
  };
  text += await either({ model: 'm', messages, stream: Math.random() < 0.5 });

  // A tool round trip, as the SDK's docs write it: the calls go back as the assistant's
  // message, each answered by a tool message.
  const tools: ChatCompletionTool[] = [
    { type: 'function', function: { name: 'add', description: 'a + b', parameters: { type: 'object', properties: { a: { type: 'number' }, b: { type: 'number' } } }, strict: true } },
  ];
  for (const tool_choice of ['auto', 'required', 'none', { type: 'function', function: { name: 'add' } }] satisfies ChatCompletionToolChoiceOption[]) {
    const asked: ChatCompletion = await client.chat.completions.create({ ...params, tools, tool_choice, parallel_tool_calls: false });
    const reply: ChatCompletionMessage = asked.choices[0].message;
    const calls: ChatCompletionMessageToolCall[] = reply.tool_calls ?? [];
    const history: ChatCompletionMessageParam[] = [...messages, reply];
    for (const call of calls) {
      const { a, b } = JSON.parse(call.function.arguments) as { a: number; b: number };
      history.push({ role: 'tool', tool_call_id: call.id, content: String(a + b) });
    }
    const answer: ChatCompletion = await client.chat.completions.create({ model: 'm', messages: history, tools });
    text += answer.choices[0].finish_reason === 'tool_calls' ? '' : answer.choices[0].message.content ?? '';
  }
  const toolStream = await client.chat.completions.create({ ...streamed, tools });
  for await (const chunk of toolStream) {
    for (const delta of chunk.choices[0]?.delta.tool_calls ?? []) text += `${delta.index}:${delta.function?.name}(${delta.function?.arguments})`;
  }

  // Negative checks: each line below must stay an error, or tsc fails ("unused @ts-expect-error").
  // @ts-expect-error a streamed answer is not a ChatCompletion (the overloads tell them apart)
  const notACompletion: ChatCompletion = await client.chat.completions.create(streamed);
  // @ts-expect-error the SDK's message requires `refusal`: its types are real, not `any`
  const noRefusal: ChatCompletionMessage = { role: 'assistant', content: 'hi' };
  // @ts-expect-error a message needs a role
  await client.chat.completions.create({ messages: [{ content: 'no role' }] });
  return `${text} ${finish} ${tokens} ${alternatives} ${notACompletion.id} ${noRefusal.content}`;
}

// Every field of the SDK's request and message types is declared by ours (so that it is
// documented, and object literals with it compile); a newer SDK with a new field fails here.
type KeysOfAny<T> = T extends unknown ? keyof T : never;
type MissingRequestFields = Exclude<keyof ChatCompletionCreateParamsBase, keyof ChatCompletionRequest>;
type MissingMessageFields = Exclude<KeysOfAny<ChatCompletionMessageParam>, keyof ChatMessage>;
export const allRequestFieldsDeclared: [MissingRequestFields] extends [never] ? true : MissingRequestFields = true;
export const allMessageFieldsDeclared: [MissingMessageFields] extends [never] ? true : MissingMessageFields = true;
