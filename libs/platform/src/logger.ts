import pino, { Logger } from 'pino';
import type { LogLevel } from '@writ/config';

/**
 * Paths redacted from every log line: credentials, assertions and whole tokens never reach
 * the log, whatever a caller passes.
 */
export const REDACTED_PATHS = [
  'req.headers.authorization',
  'req.headers.cookie',
  'req.headers.dpop',
  'req.headers["proxy-authorization"]',
  'res.headers["set-cookie"]',
  '*.access_token',
  '*.subject_token',
  '*.task_token',
  '*.client_assertion',
  '*.token',
  '*.credential',
  '*.client_secret',
  '*.password',
];

/** The process logger (pino, JSON lines on stdout unless given another destination). */
export function createLogger(level: LogLevel, name = 'writ', destination?: pino.DestinationStream): Logger {
  const options = {
    name,
    level,
    redact: { paths: REDACTED_PATHS, censor: '[redacted]' },
    base: { pid: process.pid },
    timestamp: pino.stdTimeFunctions.isoTime,
  };
  return destination ? pino(options, destination) : pino(options);
}

/** The first and last few characters of a token, enough to correlate, never enough to use. */
export function tokenHint(token: string): string {
  return token.length <= 16 ? '[short]' : `${token.slice(0, 6)}…${token.slice(-4)}`;
}
