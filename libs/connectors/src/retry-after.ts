/**
 * Longest `Retry-After` of an upstream token endpoint that Writ heeds (an hour): a provider (or
 * anything between it and Writ) asking for more is waited on for an hour, not for days: past
 * that, the provider is asked again (and may ask again).
 */
export const MAX_UPSTREAM_RETRY_AFTER_SECONDS = 3600;

const MONTHS = ['Jan', 'Feb', 'Mar', 'Apr', 'May', 'Jun', 'Jul', 'Aug', 'Sep', 'Oct', 'Nov', 'Dec'];
const DAYS = ['Sun', 'Mon', 'Tue', 'Wed', 'Thu', 'Fri', 'Sat'];
const LONG_DAYS = ['Sunday', 'Monday', 'Tuesday', 'Wednesday', 'Thursday', 'Friday', 'Saturday'];
const MONTH = MONTHS.join('|');
const TIME = '(\\d{2}):(\\d{2}):(\\d{2})';
/** RFC 9110 section 5.6.7: IMF-fixdate, `Sun, 06 Nov 1994 08:49:37 GMT`. */
const IMF_FIXDATE = new RegExp(`^(${DAYS.join('|')}), (\\d{2}) (${MONTH}) (\\d{4}) ${TIME} GMT$`);
/** The obsolete rfc850-date, `Sunday, 06-Nov-94 08:49:37 GMT` (recipients must accept it). */
const RFC850_DATE = new RegExp(`^(${LONG_DAYS.join('|')}), (\\d{2})-(${MONTH})-(\\d{2}) ${TIME} GMT$`);
/** The obsolete asctime-date, `Sun Nov  6 08:49:37 1994` (recipients must accept it). */
const ASCTIME_DATE = new RegExp(`^(${DAYS.join('|')}) (${MONTH}) (\\d{2}| \\d) ${TIME} (\\d{4})$`);

/**
 * The instant (ms since the epoch) an HTTP-date names, read strictly (RFC 9110 section 5.6.7:
 * the three formats, GMT only, a real calendar date and time whose day name matches it), or
 * `undefined` for anything else.
 */
export function parseHttpDate(value: string, now = Date.now()): number | undefined {
  let dayName: string;
  let day: number;
  let month: number;
  let year: number;
  let time: [string, string, string];
  let match = IMF_FIXDATE.exec(value);
  if (match) {
    [dayName, day, month, year, time] = [match[1], Number(match[2]), MONTHS.indexOf(match[3]), Number(match[4]), [match[5], match[6], match[7]]];
  } else if ((match = RFC850_DATE.exec(value))) {
    dayName = DAYS[LONG_DAYS.indexOf(match[1])];
    [day, month, time] = [Number(match[2]), MONTHS.indexOf(match[3]), [match[5], match[6], match[7]]];
    // A two-digit year more than 50 years ahead is the latest past year with those digits (RFC 9110).
    const thisYear = new Date(now).getUTCFullYear();
    year = Math.floor(thisYear / 100) * 100 + Number(match[4]);
    if (year > thisYear + 50) year -= 100;
  } else if ((match = ASCTIME_DATE.exec(value))) {
    [dayName, month, day, time, year] = [match[1], MONTHS.indexOf(match[2]), Number(match[3].trim()), [match[4], match[5], match[6]], Number(match[7])];
  } else {
    return undefined;
  }
  const [hour, minute, second] = time.map(Number);
  if (hour > 23 || minute > 59 || second > 59) return undefined;
  const instant = Date.UTC(year, month, day, hour, minute, second);
  const date = new Date(instant);
  // Date.UTC rolls 31 Feb over into March: a date that does not exist is not a date.
  if (date.getUTCFullYear() !== year || date.getUTCMonth() !== month || date.getUTCDate() !== day) return undefined;
  if (DAYS[date.getUTCDay()] !== dayName) return undefined;
  return instant;
}

/**
 * The seconds an HTTP `Retry-After` value asks to wait from `now` (RFC 9110 section 10.2.3:
 * `delay-seconds`, one or more digits, or an HTTP-date; a date already past is 0), rounded up;
 * `undefined` for anything else (a sign, a fraction, an exponent, several values, garbage).
 * Not capped: see {@link upstreamRetryAfter}.
 */
export function parseRetryAfter(value: string | readonly string[] | null | undefined, now = Date.now()): number | undefined {
  // Several Retry-After fields (an array, or joined by a comma that an HTTP-date also holds) say nothing certain.
  if (typeof value !== 'string') return undefined;
  const text = value.replace(/^[ \t]+|[ \t]+$/g, '');
  if (/^[0-9]+$/.test(text)) return Number(text);
  const instant = parseHttpDate(text, now);
  return instant === undefined ? undefined : Math.max(0, Math.ceil((instant - now) / 1000));
}

/**
 * What Writ heeds of an upstream token endpoint's `Retry-After`: only on a `429` or `503` (the
 * statuses it is defined for an unavailable server or a rate limit), parsed strictly
 * ({@link parseRetryAfter}), at most {@link MAX_UPSTREAM_RETRY_AFTER_SECONDS}; `undefined` when
 * there is nothing to heed.
 */
export function upstreamRetryAfter(status: number, value: string | readonly string[] | null | undefined, now = Date.now()): number | undefined {
  if (status !== 429 && status !== 503) return undefined;
  const seconds = parseRetryAfter(value, now);
  return seconds === undefined ? undefined : Math.min(seconds, MAX_UPSTREAM_RETRY_AFTER_SECONDS);
}
