/**
 * Reads a response body whole, or `undefined` as soon as it passes `limit` bytes (then the rest is
 * not read: leaving the loop cancels the stream). fetch inflates a `Content-Encoding` as the body
 * is read, so the bytes counted are the inflated ones, and a gzip bomb stops at the limit.
 */
export async function readBounded(body: AsyncIterable<Uint8Array> | null, limit: number): Promise<Buffer | undefined> {
  const chunks: Uint8Array[] = [];
  let size = 0;
  if (body) {
    for await (const chunk of body) {
      size += chunk.byteLength;
      if (size > limit) return undefined;
      chunks.push(chunk);
    }
  }
  return Buffer.concat(chunks);
}
