/**
 * Reads until `accept` says yes or `timeoutMs` passes, and returns the last read: for what
 * another instance learns asynchronously (a notification, a poll). Never a timing assertion:
 * the test asserts the value, not how long it took.
 */
export async function eventually<T>(read: () => T | Promise<T>, accept: (value: T) => boolean, timeoutMs = 8000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await read();
    if (accept(value) || Date.now() > deadline) return value;
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
}
