import { tool, type FlexibleSchema, type Tool } from 'ai';
import type { TaskAgent } from './agent.js';
import { runOperation, type OperationResult, type OperationSpec } from './operation.js';

/** Options of {@link writTool}. */
export interface WritToolOptions<Input> extends OperationSpec<Input> {
  /** The agent, bound to the task token of this run. */
  agent: TaskAgent;
  /** What the tool does, for the model. */
  description: string;
  /** The arguments the model supplies (a zod schema, or `jsonSchema(...)`). */
  inputSchema: FlexibleSchema<Input>;
}

/**
 * A Vercel AI SDK tool for one connector operation: the model supplies the arguments, the
 * tool asks Writ for exactly that operation with the constraints they imply, calls through
 * the gateway and returns `{status, body}`. A refusal (the policy's reasons, the gateway's
 * rule) is thrown, so the AI SDK hands it to the model as the tool's error.
 */
export function writTool<Input>(options: WritToolOptions<Input>): Tool<Input, OperationResult> {
  const { agent, description, inputSchema, ...spec } = options;
  return tool<Input, OperationResult>({
    description,
    inputSchema,
    execute: (input, { abortSignal }) => runOperation(agent, spec, input, abortSignal),
  } as Tool<Input, OperationResult>);
}

export { ToolRefusalError, type OperationResult, type OperationSpec, type OperationCall } from './operation.js';
