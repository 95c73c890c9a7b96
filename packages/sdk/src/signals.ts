import { WritError } from './errors.js';

/** A signal that aborts when any of `signals` does, with that one's reason (`AbortSignal.any` where the runtime has it). */
export function anySignal(signals: AbortSignal[]): AbortSignal {
  const [first] = signals;
  if (signals.length === 1 && first) return first;
  if (typeof AbortSignal.any === 'function') return AbortSignal.any(signals);
  // Runtimes without AbortSignal.any (Node.js before 20.3): the same, by hand.
  const controller = new AbortController();
  for (const source of signals) {
    if (source.aborted) {
      controller.abort(source.reason);
      break;
    }
    source.addEventListener('abort', () => controller.abort(source.reason), { once: true });
  }
  return controller.signal;
}

/** The longest timer `setTimeout` keeps (a longer one fires at once). */
const MAX_TIMER_MS = 2_147_483_647;

/** `value` when it is a usable timeout (a positive number of milliseconds a timer can hold), else an `invalid_options` error naming `name`. */
export function checkTimeout(value: number, name: string): number {
  if (typeof value !== 'number' || !(value > 0) || value > MAX_TIMER_MS) {
    throw new WritError('invalid_options', `${name} must be a positive number of milliseconds (at most ${MAX_TIMER_MS})`);
  }
  return value;
}
