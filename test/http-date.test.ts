import { test } from 'tap'
import { formatHttpDate, parseHttpDate } from '../lib/http-date.js'

// RFC 7231 §7.1.1.1's example instant: Sun, 06 Nov 1994 08:49:37 GMT
const EXAMPLE = Date.UTC(1994, 10, 6, 8, 49, 37)
const NOW_2025 = Date.UTC(2025, 5, 15, 12, 0, 0)

test('the example instant', async (t) => {
  t.equal(EXAMPLE, 784111777000)
})

test('IMF-fixdate', async (t) => {
  t.equal(parseHttpDate('Sun, 06 Nov 1994 08:49:37 GMT'), EXAMPLE)
  t.equal(parseHttpDate('Sun, 06 Nov 1994 08:49:37 GMT', NOW_2025), EXAMPLE)
  t.equal(parseHttpDate('Sun, 05 Jan 2014 21:31:40 GMT'), Date.UTC(2014, 0, 5, 21, 31, 40))
  t.equal(parseHttpDate('Thu, 29 Feb 2024 00:00:00 GMT'), Date.UTC(2024, 1, 29))
  t.equal(parseHttpDate('Thu, 01 Jan 1970 00:00:00 GMT'), 0)
  t.equal(parseHttpDate('Fri, 31 Dec 9999 23:59:59 GMT'), Date.UTC(9999, 11, 31, 23, 59, 59))
  t.equal(parseHttpDate('Sat, 07 Jun 2014 20:51:35 GMT'), Date.UTC(2014, 5, 7, 20, 51, 35))
})

test('RFC 850 dates', async (t) => {
  t.equal(parseHttpDate('Sunday, 06-Nov-94 08:49:37 GMT', NOW_2025), EXAMPLE)
  t.equal(parseHttpDate('Saturday, 01-Jan-00 00:00:00 GMT', NOW_2025), Date.UTC(2000, 0, 1))
  t.equal(parseHttpDate('Wednesday, 01-Jan-70 00:00:00 GMT', NOW_2025), Date.UTC(2070, 0, 1))
  // without `now`, the current year is used: '94 is 1994 until 2044
  t.equal(parseHttpDate('Sunday, 06-Nov-94 08:49:37 GMT'), EXAMPLE)
})

test('RFC 850 two-digit years: more than 50 years ahead means the past century', async (t) => {
  // in 2025, 2075 is exactly 50 years ahead and kept; 2076 is more and becomes 1976
  t.equal(parseHttpDate('Tuesday, 01-Jan-75 00:00:00 GMT', NOW_2025), Date.UTC(2075, 0, 1))
  t.equal(parseHttpDate('Thursday, 01-Jan-76 00:00:00 GMT', NOW_2025), Date.UTC(1976, 0, 1))
  // the day name must fit the year the rule chose
  t.equal(parseHttpDate('Thursday, 01-Jan-75 00:00:00 GMT', NOW_2025), undefined)
  t.equal(parseHttpDate('Tuesday, 01-Jan-76 00:00:00 GMT', NOW_2025), undefined)

  // the same text read from another `now`
  const now2094 = Date.UTC(2094, 0, 1)
  t.equal(parseHttpDate('Saturday, 06-Nov-94 08:49:37 GMT', now2094), Date.UTC(2094, 10, 6, 8, 49, 37))
  t.equal(parseHttpDate('Sunday, 06-Nov-94 08:49:37 GMT', now2094), undefined)
  const now1960 = Date.UTC(1960, 0, 1)
  t.equal(parseHttpDate('Thursday, 01-Jan-76 00:00:00 GMT', now1960), Date.UTC(1976, 0, 1))
  t.equal(parseHttpDate('Sunday, 01-Jan-50 00:00:00 GMT', now1960), Date.UTC(1950, 0, 1))
  // 2011 from 1960 is more than 50 years ahead: 1911
  t.equal(parseHttpDate('Sunday, 01-Jan-11 00:00:00 GMT', now1960), Date.UTC(1911, 0, 1))
})

test('asctime dates', async (t) => {
  t.equal(parseHttpDate('Sun Nov  6 08:49:37 1994'), EXAMPLE)
  t.equal(parseHttpDate('Sun Nov 06 08:49:37 1994'), EXAMPLE)
  t.equal(parseHttpDate('Wed Nov 16 08:49:37 1994'), Date.UTC(1994, 10, 16, 8, 49, 37))
  t.equal(parseHttpDate('Thu Jan  1 00:00:00 1970'), 0)
})

test('formats and values that are not HTTP-dates', async (t) => {
  for (const value of [
    '',
    'aaaa',
    'now',
    '0',
    '784111777',
    // forms only Date.parse accepts
    '1994-11-06T08:49:37Z',
    '1994-11-06T08:49:37.000Z',
    '1994-11-06',
    'Sun Nov 06 1994 08:49:37 GMT+0000 (Coordinated Universal Time)',
    'Sun, 6 Nov 1994 08:49:37 GMT',
    'Sun, 06 Nov 94 08:49:37 GMT',
    'Sun 06 Nov 1994 08:49:37 GMT',
    'Sun, 06 Nov 1994 08:49 GMT',
    'Sun, 06 Nov 1994 8:49:37 GMT',
    'Sun, 06 Nov 1994 08:49:37 +0000',
    'Sun, 06 Nov 1994 08:49:37 UTC',
    'Sun, 06 Nov 1994 08:49:37',
    'Sunday, 06 Nov 1994 08:49:37 GMT',
    'Sun, 06-Nov-94 08:49:37 GMT',
    'Sunday, 06-Nov-1994 08:49:37 GMT',
    'Sunday, 6-Nov-94 08:49:37 GMT',
    'Sun Nov 6 08:49:37 1994',
    'Sun Nov  6 08:49:37 94',
    'Sun Nov  6 08:49:37 1994 GMT',
    // case
    'Sun, 06 Nov 1994 08:49:37 gmt',
    'sun, 06 Nov 1994 08:49:37 GMT',
    'SUN, 06 NOV 1994 08:49:37 GMT',
    'Sun, 06 nov 1994 08:49:37 GMT',
    'sunday, 06-Nov-94 08:49:37 GMT',
    'Sunday, 06-Nov-94 08:49:37 gmt',
    // surrounding whitespace
    'Sun, 06 Nov 1994 08:49:37 GMT ',
    ' Sun, 06 Nov 1994 08:49:37 GMT',
    'Sun, 06 Nov 1994 08:49:37 GMT\n',
    'Sun, 06 Nov 1994 08:49:37 GMT\r\n',
    'Sun,  06 Nov 1994 08:49:37 GMT',
    'Sun Nov  6 08:49:37 1994 ',
    'Sunday, 06-Nov-94 08:49:37 GMT '
  ]) {
    t.equal(parseHttpDate(value, NOW_2025), undefined, JSON.stringify(value))
  }
})

test('a day name that does not fit the date', async (t) => {
  t.equal(parseHttpDate('Mon, 06 Nov 1994 08:49:37 GMT'), undefined)
  t.equal(parseHttpDate('Xyz, 06 Nov 1994 08:49:37 GMT'), undefined)
  t.equal(parseHttpDate('Monday, 06-Nov-94 08:49:37 GMT', NOW_2025), undefined)
  // the long and the short names are not interchangeable
  t.equal(parseHttpDate('Sunday, 06 Nov 1994 08:49:37 GMT'), undefined)
  t.equal(parseHttpDate('Sunxyz, 06-Nov-94 08:49:37 GMT', NOW_2025), undefined)
  t.equal(parseHttpDate('Mon Nov  6 08:49:37 1994'), undefined)
  // -08's vectors and the draft's §2.3 example use a wrong weekday (05 Jan 2014 is a Sunday, 07 Jun 2014 a Saturday)
  t.equal(parseHttpDate('Thu, 05 Jan 2014 21:31:40 GMT'), undefined)
  t.equal(parseHttpDate('Tue, 07 Jun 2014 20:51:35 GMT'), undefined)
})

test('dates that do not exist are not rolled over', async (t) => {
  // 31 Feb 2024 would roll over to Sat, 02 Mar 2024: the day name fits that, the date does not
  t.equal(parseHttpDate('Sat, 31 Feb 2024 00:00:00 GMT'), undefined)
  t.equal(parseHttpDate('Fri, 29 Feb 2023 00:00:00 GMT'), undefined)
  t.equal(parseHttpDate('Sat, 31 Feb 2024 00:00:00 GMT'.replace('31 Feb', '02 Mar')), Date.UTC(2024, 2, 2))
  t.equal(parseHttpDate('Thu, 00 Nov 1994 08:49:37 GMT'), undefined)
  t.equal(parseHttpDate('Mon, 31 Nov 1994 08:49:37 GMT'), undefined)
  t.equal(parseHttpDate('Fri, 32 Dec 1994 08:49:37 GMT'), undefined)
  t.equal(parseHttpDate('Sat Feb 31 00:00:00 2024'), undefined)
  t.equal(parseHttpDate('Saturday, 31-Feb-24 00:00:00 GMT', NOW_2025), undefined)
})

test('time fields out of range', async (t) => {
  t.equal(parseHttpDate('Sun, 06 Nov 1994 23:59:59 GMT'), Date.UTC(1994, 10, 6, 23, 59, 59))
  // hour 24 would roll over to Mon 07 Nov
  t.equal(parseHttpDate('Sun, 06 Nov 1994 24:00:00 GMT'), undefined)
  t.equal(parseHttpDate('Mon, 06 Nov 1994 24:00:00 GMT'), undefined)
  // minute 60 and second 60 would roll over to the same day, where Sun still fits
  t.equal(parseHttpDate('Sun, 06 Nov 1994 08:60:00 GMT'), undefined)
  t.equal(parseHttpDate('Sun, 06 Nov 1994 08:49:60 GMT'), undefined)
  t.equal(parseHttpDate('Sun, 06 Nov 1994 23:59:60 GMT'), undefined)
  t.equal(parseHttpDate('Sun, 06 Nov 1994 99:99:99 GMT'), undefined)
  t.equal(parseHttpDate('Sunday, 06-Nov-94 08:60:00 GMT', NOW_2025), undefined)
  t.equal(parseHttpDate('Sun Nov  6 08:49:60 1994'), undefined)
})

test('unknown months', async (t) => {
  for (const month of ['Foo', 'Sept', 'Jun.', 'Mai', 'Xyz']) {
    t.equal(parseHttpDate(`Sun, 06 ${month} 1994 08:49:37 GMT`), undefined, month)
  }
  t.equal(parseHttpDate('Sunday, 06-Foo-94 08:49:37 GMT', NOW_2025), undefined)
  t.equal(parseHttpDate('Sun Foo  6 08:49:37 1994'), undefined)
  // every month name is known
  const months = ['Jan', 'Feb', 'Mar', 'Apr', 'May', 'Jun', 'Jul', 'Aug', 'Sep', 'Oct', 'Nov', 'Dec']
  const days = ['Sun', 'Mon', 'Tue', 'Wed', 'Thu', 'Fri', 'Sat']
  for (let m = 0; m < 12; m++) {
    const time = Date.UTC(2023, m, 10, 1, 2, 3)
    const day = days[new Date(time).getUTCDay()]
    t.equal(parseHttpDate(`${day}, 10 ${months[m]} 2023 01:02:03 GMT`), time, `month ${m}`)
  }
})

test('formatHttpDate', async (t) => {
  t.equal(formatHttpDate(EXAMPLE), 'Sun, 06 Nov 1994 08:49:37 GMT')
  t.equal(formatHttpDate(0), 'Thu, 01 Jan 1970 00:00:00 GMT')
  t.equal(formatHttpDate(Date.UTC(2024, 0, 5, 3, 4, 5)), 'Fri, 05 Jan 2024 03:04:05 GMT')
  // milliseconds are dropped
  t.equal(formatHttpDate(EXAMPLE + 999), 'Sun, 06 Nov 1994 08:49:37 GMT')
})

test('formatHttpDate round-trips through parseHttpDate', async (t) => {
  const times = [
    0,
    EXAMPLE,
    Date.UTC(2000, 1, 29, 12, 0, 0),
    Date.UTC(2024, 11, 31, 23, 59, 59),
    Date.UTC(2038, 0, 19, 3, 14, 8),
    Date.UTC(1999, 6, 4, 0, 0, 1)
  ]
  for (let day = 0; day < 400; day += 13) times.push(Date.UTC(2025, 0, 1 + day, day % 24, day % 60, (day * 7) % 60))
  for (const time of times) {
    t.equal(parseHttpDate(formatHttpDate(time)), time, formatHttpDate(time))
    // sub-second parts are truncated, never rounded up
    t.equal(parseHttpDate(formatHttpDate(time + 999)), time)
  }
})

test('years below 100 are not read as 19xx, and RFC 850 years can fall in the next century', async (t) => {
  t.equal(parseHttpDate('Sat, 01 Jan 0050 00:00:00 GMT'), new Date('0050-01-01T00:00:00Z').getTime())
  t.equal(parseHttpDate('Sun, 01 Jan 0050 00:00:00 GMT'), undefined, '1950 was a Sunday, year 50 a Saturday')
  t.equal(parseHttpDate('Friday, 01-Jan-00 00:00:00 GMT', Date.UTC(2070, 0, 1)), Date.UTC(2100, 0, 1))
})
