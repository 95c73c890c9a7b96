/** Reads an unsigned LEB128 integer at `at`: its value and the offset after it. */
function readLeb(bytes: Uint8Array, at: number): [number, number] {
  let value = 0;
  let shift = 0;
  let byte: number;
  let offset = at;
  do {
    byte = bytes[offset];
    offset += 1;
    value += (byte & 0x7f) * 2 ** shift;
    shift += 7;
  } while (byte & 0x80);
  return [value, offset];
}

function leb(value: number): number[] {
  const out: number[] = [];
  let rest = value;
  do {
    let byte = rest & 0x7f;
    rest = Math.floor(rest / 128);
    if (rest > 0) byte |= 0x80;
    out.push(byte);
  } while (rest > 0);
  return out;
}

function readName(bytes: Uint8Array, at: number): [string, number] {
  const [length, start] = readLeb(bytes, at);
  return [Buffer.from(bytes.subarray(start, start + length)).toString('utf8'), start + length];
}

/** `loop br 0 end unreachable end`, no locals: a body that never returns, valid for any signature. */
const SPIN_BODY = [0x00, 0x03, 0x40, 0x0c, 0x00, 0x0b, 0x00, 0x0b];

/**
 * A copy of a compiled OPA policy module whose `opa_eval` spins forever: what a hostile upload
 * can be (a module need not come from Rego). Edits the binary (WebAssembly core spec, section 5):
 * counts the imported functions, finds the `opa_eval` export, replaces that function's body in
 * the code section. Nothing else of the module changes, so it loads as an OPA policy.
 */
export function spinningPolicyModule(module: Uint8Array): Buffer {
  const sections: Array<{ id: number; head: number; start: number; end: number }> = [];
  for (let at = 8; at < module.length;) {
    const [size, start] = readLeb(module, at + 1);
    sections.push({ id: module[at], head: at, start, end: start + size });
    at = start + size;
  }
  let imported = 0;
  let target = -1;
  for (const section of sections) {
    let [count, at] = readLeb(module, section.start);
    for (; section.id === 2 && count > 0; count -= 1) {
      [, at] = readName(module, at);
      [, at] = readName(module, at);
      const kind = module[at];
      at += 1;
      if (kind === 0) imported += 1;
      if (kind === 0) [, at] = readLeb(module, at);
      else if (kind === 1 || kind === 2) {
        // table: its element type first; then limits (flags, min, max if flagged).
        if (kind === 1) at += 1;
        const flags = module[at];
        [, at] = readLeb(module, at + 1);
        if (flags & 1) [, at] = readLeb(module, at);
      } else at += 2; // global: value type and mutability
    }
    for (; section.id === 7 && count > 0; count -= 1) {
      let field: string;
      [field, at] = readName(module, at);
      const kind = module[at];
      let index: number;
      [index, at] = readLeb(module, at + 1);
      if (kind === 0 && field === 'opa_eval') target = index;
    }
  }
  const code = sections.find((section) => section.id === 10);
  if (!code || target < imported) throw new Error('not an OPA policy module with opa_eval');
  let [count, at] = readLeb(module, code.start);
  const bodies: number[][] = [];
  for (; count > 0; count -= 1) {
    const [size, start] = readLeb(module, at);
    bodies.push([...module.subarray(start, start + size)]);
    at = start + size;
  }
  bodies[target - imported] = SPIN_BODY;
  const content = [...leb(bodies.length), ...bodies.flatMap((body) => [...leb(body.length), ...body])];
  return Buffer.concat([module.subarray(0, code.head), Buffer.from([10, ...leb(content.length), ...content]), module.subarray(code.end)]);
}
