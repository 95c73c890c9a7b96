import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import ts from 'typescript';

// Agent developers copy the TypeScript examples of docs/agents.md and this package's README.
// They are type-checked here against the SDK as it is (and the `ai`, `zod` and MCP SDK types),
// so that a renamed option or method fails a test instead of a reader.

const root = join(__dirname, '..', '..', '..');
const DOCS = ['docs/agents.md', 'packages/sdk/README.md'];

/** What the examples take as given: keys, a model, and (after the first example) an agent and a task. */
const PRELUDE = `
import type { JWK } from 'jose';
import type { Agent as DocAgent } from '@writ/sdk';
declare const orchestratorJwk: JWK & { kid: string };
declare const agentJwk: JWK & { kid: string };
declare const model: Parameters<typeof import('ai').generateText>[0]['model'];
declare const agent: DocAgent;
declare const task: { taskToken: string };
`;

function examples(): Array<{ doc: string; line: number; code: string }> {
  return DOCS.flatMap((doc) => {
    const text = readFileSync(join(root, doc), 'utf8');
    return [...text.matchAll(/^```ts\n([\s\S]*?)^```/gm)].map((m) => ({ doc, line: text.slice(0, m.index).split('\n').length + 1, code: m[1] }));
  });
}

/** One module: the examples' imports hoisted (once each), each example's body in its own function. */
function program(blocks: Array<{ code: string }>): string {
  const imports = new Set<string>();
  const bodies = blocks.map(({ code }) =>
    code
      .split('\n')
      .filter((line) => !(line.startsWith('import ') && imports.add(line)))
      .join('\n'),
  );
  let source = `${[...imports].join('\n')}\n${PRELUDE}`;
  bodies.forEach((body, block) => (source += `export async function example${block}(): Promise<unknown> {\n${body}\nreturn undefined;\n}\n`));
  return source;
}

describe('TypeScript examples in the docs', () => {
  it('type-check against the SDK', () => {
    const blocks = examples();
    expect(blocks.length).toBeGreaterThanOrEqual(3);
    const source = program(blocks);
    const file = join(root, 'packages', 'sdk', '__docs_examples__.ts');
    const config = ts.getParsedCommandLineOfConfigFile(join(root, 'tsconfig.json'), {}, { ...ts.sys, onUnRecoverableConfigFileDiagnostic: () => undefined })!;
    const options = { ...config.options, noEmit: true, incremental: false, noUnusedLocals: false, noUnusedParameters: false };
    const host = ts.createCompilerHost(options);
    const getSourceFile = host.getSourceFile.bind(host);
    host.getSourceFile = (name, language) => (name === file ? ts.createSourceFile(name, source, language) : getSourceFile(name, language));
    const fileExists = host.fileExists.bind(host);
    host.fileExists = (name) => name === file || fileExists(name);
    const diagnostics = ts.getPreEmitDiagnostics(ts.createProgram([file], options, host)).map((d) => {
      // The example's line as written, so that the doc's reader finds it.
      const line = d.file === undefined || d.start === undefined ? '' : d.file.text.split('\n')[d.file.getLineAndCharacterOfPosition(d.start).line].trim();
      return `${line}: ${ts.flattenDiagnosticMessageText(d.messageText, '\n')}`;
    });
    expect(diagnostics).toEqual([]);
  });
});
