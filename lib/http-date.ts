// RFC 7231 §7.1.1.1: a recipient MUST accept all three HTTP-date formats, and
// nothing else: `Date.parse` accepts far more (and returns NaN for junk, which
// peers then compared against and so skipped the freshness check).

const DAYS = ['Sun', 'Mon', 'Tue', 'Wed', 'Thu', 'Fri', 'Sat']
const LONG_DAYS = ['Sunday', 'Monday', 'Tuesday', 'Wednesday', 'Thursday', 'Friday', 'Saturday']
const MONTHS = ['Jan', 'Feb', 'Mar', 'Apr', 'May', 'Jun', 'Jul', 'Aug', 'Sep', 'Oct', 'Nov', 'Dec']

// IMF-fixdate: Sun, 06 Nov 1994 08:49:37 GMT
const IMF_FIXDATE = /^([A-Z][a-z]{2}), (\d{2}) ([A-Z][a-z]{2}) (\d{4}) (\d{2}):(\d{2}):(\d{2}) GMT$/
// obsolete RFC 850: Sunday, 06-Nov-94 08:49:37 GMT
const RFC850_DATE = /^([A-Z][a-z]{5,8}), (\d{2})-([A-Z][a-z]{2})-(\d{2}) (\d{2}):(\d{2}):(\d{2}) GMT$/
// obsolete asctime: Sun Nov  6 08:49:37 1994
const ASCTIME_DATE = /^([A-Z][a-z]{2}) ([A-Z][a-z]{2}) ([ \d]\d) (\d{2}):(\d{2}):(\d{2}) (\d{4})$/

function build (dayName: string, names: string[], day: string, month: string, year: number, hour: string, minute: string, second: string): number | undefined {
  const monthIndex = MONTHS.indexOf(month)
  if (monthIndex < 0) return undefined
  const d = Number(day)
  const h = Number(hour)
  const m = Number(minute)
  // RFC 7231 allows a leap second (60); Date.UTC would roll it over, so refuse it instead of guessing.
  const s = Number(second)
  if (h > 23 || m > 59 || s > 59) return undefined
  // Date.UTC reads years 0-99 as 1900-1999; set the full year explicitly.
  const date = new Date(Date.UTC(2000, monthIndex, d, h, m, s))
  date.setUTCFullYear(year)
  const time = date.getTime()
  // Rejects 31 Feb and friends, which Date.UTC silently rolls over, and a day name that does not fit.
  if (date.getUTCDate() !== d || date.getUTCMonth() !== monthIndex) return undefined
  if (names[date.getUTCDay()] !== dayName) return undefined
  return time
}

// Under load most requests carry a Date of the current second: remember the last one parsed.
let lastValue = ''
let lastTime: number | undefined

/** Parses an HTTP-date strictly; returns milliseconds since the epoch, or undefined when it is not one. */
export function parseHttpDate (value: string, now = Date.now()): number | undefined {
  // RFC 850 dates depend on `now` (two-digit years), so only IMF-fixdate is remembered.
  if (value === lastValue) return lastTime
  const time = parseUncached(value, now)
  if (time !== undefined && value.endsWith(' GMT') && value.charCodeAt(3) === 0x2c) {
    lastValue = value
    lastTime = time
  }
  return time
}

function parseUncached (value: string, now: number): number | undefined {
  let match = IMF_FIXDATE.exec(value)
  if (match !== null) {
    const [, dayName, day, month, year, hour, minute, second] = match as unknown as string[]
    return build(dayName!, DAYS, day!, month!, Number(year), hour!, minute!, second!)
  }
  match = RFC850_DATE.exec(value)
  if (match !== null) {
    const [, dayName, day, month, shortYear, hour, minute, second] = match as unknown as string[]
    // RFC 7231: a two-digit year more than 50 years in the future means the most recent past year with those digits.
    const currentYear = new Date(now).getUTCFullYear()
    let year = Math.floor(currentYear / 100) * 100 + Number(shortYear)
    if (year > currentYear + 50) year -= 100
    else if (year <= currentYear - 50) year += 100
    return build(dayName!, LONG_DAYS, day!, month!, year, hour!, minute!, second!)
  }
  match = ASCTIME_DATE.exec(value)
  if (match !== null) {
    const [, dayName, month, day, hour, minute, second, year] = match as unknown as string[]
    return build(dayName!, DAYS, day!.trim().padStart(2, '0'), month!, Number(year), hour!, minute!, second!)
  }
  return undefined
}

/** Formats a time as IMF-fixdate, the form RFC 7231 says senders must use. */
export function formatHttpDate (time: number): string {
  return new Date(time).toUTCString()
}
