import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import type { Pool } from 'pg';

const AUDIT_DOC = join(__dirname, '..', '..', 'docs', 'audit.md');

/**
 * What docs/audit.md says about one event type: the rest of each table row whose first cell
 * names it, with the `data.<member>` its section's prose gives every type of the table
 * ("Each names ... the user (`data.user`)"); or, for the types it describes in prose (policy
 * changes, approvals), the paragraphs that name it.
 */
function documentationOf(doc: string, type: string): string {
  const name = `\`${type}\``;
  const named = (line: string) => line.startsWith('| `') && line.split(' | ')[0].includes(name);
  const sections = doc.split(/^(?=#{2,3} )/m).filter((section) => section.split('\n').some(named));
  if (sections.length > 0)
    return sections
      .flatMap((section) => [
        ...section
          .split('\n')
          .filter(named)
          .map((line) => line.split(' | ').slice(1).join(' | ')),
        ...[...section.matchAll(/`data\.[a-z_]+`/g)].map((m) => m[0].replace('data.', '')),
      ])
      .join('\n');
  return doc
    .split(/\n\s*\n/)
    .filter((paragraph) => !paragraph.startsWith('|') && paragraph.includes(name))
    .join('\n');
}

/**
 * The members of recorded events' `data` that docs/audit.md does not name for their type, as
 * `type: member` (a member is named as `` `member` ``, `` `member.field` `` or `"member"`), and
 * `type` alone for a type it does not describe. Security engineers query the log by these
 * names: a member the code records and the reference does not list is drift, whichever moved.
 */
export async function undocumentedEventMembers(pool: Pool): Promise<string[]> {
  const doc = readFileSync(AUDIT_DOC, 'utf8');
  const { rows } = await pool.query<{ type: string; member: string }>(
    `SELECT DISTINCT type, jsonb_object_keys(data) AS member FROM audit_events WHERE jsonb_typeof(data) = 'object' ORDER BY 1, 2`,
  );
  const undocumented: string[] = [];
  for (const { type, member } of rows) {
    const text = documentationOf(doc, type);
    if (!text) {
      if (!undocumented.includes(type)) undocumented.push(type);
    } else if (!text.includes(`\`${member}\``) && !text.includes(`\`${member}.`) && !text.includes(`"${member}"`)) {
      undocumented.push(`${type}: ${member}`);
    }
  }
  return undocumented;
}
