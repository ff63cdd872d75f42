import { test, type Test } from 'tap'
import { MalformedSignatureError } from '../lib/errors.js'
import {
  DEFAULT_LIMITS,
  parseAuthParams,
  parseCoveredHeaders,
  parseSignatureParams,
  signatureCredentials
} from '../lib/parse.js'
import {
  allHeadersTest10,
  allHeadersTest12,
  basicTest,
  basicTest10AuthorizationHeader,
  defaultTest,
  draft08
} from './fixtures/draft-vectors.js'

/** Asserts that fn throws exactly a MalformedSignatureError with the given reason. */
function throwsMalformed (t: Test, fn: () => unknown, reason: string): void {
  let caught: unknown
  try {
    fn()
  } catch (err) {
    caught = err
  }
  t.ok(caught instanceof MalformedSignatureError, `MalformedSignatureError for: ${reason}`)
  t.ok(caught instanceof TypeError, 'a TypeError subclass')
  t.match(caught, {
    code: 'FST_CAVAGE_MALFORMED',
    statusCode: 401,
    message: `Malformed signature header: ${reason}`
  })
}

const SIG = 'YWJjZA=='

function entries (map: Map<string, string>): Array<[string, string]> {
  return [...map.entries()]
}

test('parseAuthParams: tokens and quoted strings', async (t) => {
  t.same(entries(parseAuthParams('a=b,c="d e",f=""')), [['a', 'b'], ['c', 'd e'], ['f', '']])
  // every tchar is allowed in a name and in a token value
  const tchars = "!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
  t.same(entries(parseAuthParams(`x=${tchars}`)), [['x', tchars]])
  t.same(entries(parseAuthParams(`${tchars}=1`)), [[tchars.toLowerCase(), '1']])
  // separators inside a quoted string are kept as they are
  t.same(entries(parseAuthParams('a="b,c=d; e\t(f)"')), [['a', 'b,c=d; e\t(f)']])
  // latin1 obs-text is allowed in a quoted value
  t.same(entries(parseAuthParams('a="caf\u00e9 \u00ff \u0080"')), [['a', 'caf\u00e9 \u00ff \u0080']])
  t.same(entries(parseAuthParams('')), [])
})

test('parseAuthParams: backslash escapes', async (t) => {
  t.same(entries(parseAuthParams('a="x\\"y\\\\z\\q"')), [['a', 'x"y\\zq']])
  t.same(entries(parseAuthParams('a="\\"\\""')), [['a', '""']])
  t.same(entries(parseAuthParams('a="\\\t\\ \\\u00ff"')), [['a', '\t \u00ff']])
  // an escaped quote does not end the value
  t.same(entries(parseAuthParams('a="b\\",c=d"')), [['a', 'b",c=d']])
})

test('parseAuthParams: OWS around "," and "="', async (t) => {
  t.same(entries(parseAuthParams('a = "b" ,  c=d')), [['a', 'b'], ['c', 'd']])
  t.same(entries(parseAuthParams(' \t a\t=\tb \t,\t c = "d" \t ')), [['a', 'b'], ['c', 'd']])
  t.same(entries(parseAuthParams('a="b",c=d')), [['a', 'b'], ['c', 'd']])
})

test('parseAuthParams: empty list elements are skipped', async (t) => {
  t.same(entries(parseAuthParams(',a=b,, ,\t,c=d,')), [['a', 'b'], ['c', 'd']])
  t.same(entries(parseAuthParams(' , ,, ')), [])
})

test('parseAuthParams: names are case-insensitive, values keep their case', async (t) => {
  const params = parseAuthParams('KeyID="Te St",ALGORITHM=RSA-SHA256')
  t.same(entries(params), [['keyid', 'Te St'], ['algorithm', 'RSA-SHA256']])
})

test('parseAuthParams: duplicate parameters are rejected', async (t) => {
  throwsMalformed(t, () => parseAuthParams('a=1,a=2'), 'duplicate parameter "a"')
  throwsMalformed(t, () => parseAuthParams('keyId="x",KEYID="x"'), 'duplicate parameter "keyid"')
  throwsMalformed(t, () => parseAuthParams('a="",b=1,A=""'), 'duplicate parameter "a"')
})

test('parseAuthParams: unterminated quoted value', async (t) => {
  throwsMalformed(t, () => parseAuthParams('a="bc'), 'unterminated quoted value for "a"')
  throwsMalformed(t, () => parseAuthParams('a="'), 'unterminated quoted value for "a"')
  throwsMalformed(t, () => parseAuthParams('a="b\\"'), 'unterminated quoted value for "a"')
})

test('parseAuthParams: bad escapes', async (t) => {
  throwsMalformed(t, () => parseAuthParams('a="b\\'), 'bad escape in "a"')
  throwsMalformed(t, () => parseAuthParams('a="b\\\u0001"'), 'bad escape in "a"')
  throwsMalformed(t, () => parseAuthParams('a="b\\\n"'), 'bad escape in "a"')
  throwsMalformed(t, () => parseAuthParams('a="b\\\u007f"'), 'bad escape in "a"')
  throwsMalformed(t, () => parseAuthParams('a="b\\\u0100"'), 'bad escape in "a"')
})

test('parseAuthParams: control and non-latin1 characters in quoted values', async (t) => {
  for (const c of ['\u0000', '\u0001', '\n', '\r', '\u001f', '\u007f', '\u0100', '\u20ac', '\ud83d\ude00']) {
    throwsMalformed(t, () => parseAuthParams(`a="x${c}y"`), 'control or non-latin1 character in "a"')
  }
})

test('parseAuthParams: missing "=" or value', async (t) => {
  throwsMalformed(t, () => parseAuthParams('a'), 'parameter "a" has no value')
  throwsMalformed(t, () => parseAuthParams('a b=c'), 'parameter "a" has no value')
  throwsMalformed(t, () => parseAuthParams('a,b=c'), 'parameter "a" has no value')
  throwsMalformed(t, () => parseAuthParams('b=c,a'), 'parameter "a" has no value')
  throwsMalformed(t, () => parseAuthParams('a='), 'parameter "a" has no value')
  throwsMalformed(t, () => parseAuthParams('a= '), 'parameter "a" has no value')
  throwsMalformed(t, () => parseAuthParams('a=,b=c'), 'parameter "a" has no value')
  throwsMalformed(t, () => parseAuthParams('a=(b)'), 'parameter "a" has no value')
  // a non-ASCII character ends the name
  throwsMalformed(t, () => parseAuthParams('a\u00e9=b'), 'parameter "a" has no value')
})

test('parseAuthParams: garbage between and before parameters', async (t) => {
  throwsMalformed(t, () => parseAuthParams('a=b c=d'), 'expected "," after "a"')
  throwsMalformed(t, () => parseAuthParams('a="b"c=d'), 'expected "," after "a"')
  throwsMalformed(t, () => parseAuthParams('a="b" "c"'), 'expected "," after "a"')
  throwsMalformed(t, () => parseAuthParams('a=b;c=d'), 'expected "," after "a"')
  throwsMalformed(t, () => parseAuthParams('a=b"c"'), 'expected "," after "a"')
  throwsMalformed(t, () => parseAuthParams('=b'), 'unexpected character at position 0')
  throwsMalformed(t, () => parseAuthParams('a=b, "c"'), 'unexpected character at position 5')
  throwsMalformed(t, () => parseAuthParams('\u00e9=b'), 'unexpected character at position 0')
  throwsMalformed(t, () => parseAuthParams('a=b,;'), 'unexpected character at position 4')
})

test('parseSignatureParams: the draft vectors', async (t) => {
  t.same(parseSignatureParams(defaultTest.signatureHeader), {
    keyId: 'Test',
    signature: 'SjWJWbWN7i0wzBvtPl8rbASWz5xQW6mcJmn+ibttBqtifLN7Sazz6m79cNfwwb8DMJ5cou1s7uEGKKCs+FLEEaDV5lp7q25WqS+lavg7T8hc0GppauB6hbgEKTwblDHYGEtbGmtdHgVCk9SuS13F0hZ8FD0k/5OxEPXe5WozsbM=',
    algorithm: 'rsa-sha256',
    headers: ['date'],
    created: undefined,
    expires: undefined
  })
  t.same(parseSignatureParams(basicTest.signatureHeader).headers, ['(request-target)', 'host', 'date'])
  t.same(parseSignatureParams(allHeadersTest10.signatureHeader).headers,
    ['(request-target)', 'host', 'date', 'content-type', 'digest', 'content-length'])
  t.same(parseSignatureParams(draft08.basicTest.signatureHeader).headers, ['(request-target)', 'host', 'date'])

  const c3 = parseSignatureParams(allHeadersTest12.signatureHeader)
  t.equal(c3.created, '1402170695')
  t.equal(c3.expires, '1402170699')
  t.same(c3.headers, ['(request-target)', '(created)', '(expires)', 'host', 'date', 'content-type', 'digest', 'content-length'])

  // -10's C.2 Authorization header has a space after a comma
  const credentials = signatureCredentials(basicTest10AuthorizationHeader)
  t.type(credentials, 'string')
  t.same(parseSignatureParams(credentials!), parseSignatureParams(basicTest.signatureHeader))
})

test('parseSignatureParams: algorithm is lowercased, absent is undefined', async (t) => {
  t.equal(parseSignatureParams(`keyId=k,signature="${SIG}",algorithm="RSA-SHA256"`).algorithm, 'rsa-sha256')
  t.equal(parseSignatureParams(`keyId=k,signature="${SIG}"`).algorithm, undefined)
  // unknown algorithms are passed through: the verifier decides
  t.equal(parseSignatureParams(`keyId=k,signature="${SIG}",algorithm=Foo`).algorithm, 'foo')
})

test('parseSignatureParams: keyId and signature are required and non-empty', async (t) => {
  throwsMalformed(t, () => parseSignatureParams(`signature="${SIG}"`), '"keyId" is required')
  throwsMalformed(t, () => parseSignatureParams(`keyId="",signature="${SIG}"`), '"keyId" is required')
  throwsMalformed(t, () => parseSignatureParams('keyId="k"'), '"signature" is required')
  throwsMalformed(t, () => parseSignatureParams('keyId="k",signature=""'), '"signature" is required')
  throwsMalformed(t, () => parseSignatureParams(''), '"keyId" is required')
  // names are case-insensitive
  const params = parseSignatureParams(`KEYID="k",Signature="${SIG}"`)
  t.equal(params.keyId, 'k')
  t.equal(params.signature, SIG)
  // keyId keeps escapes resolved and its case
  t.equal(parseSignatureParams(`keyId="https://Ex.org/a\\"b#main-key",signature="${SIG}"`).keyId, 'https://Ex.org/a"b#main-key')
})

test('parseSignatureParams: duplicate parameters are rejected', async (t) => {
  throwsMalformed(t, () => parseSignatureParams(`keyId="a",keyId="b",signature="${SIG}"`), 'duplicate parameter "keyid"')
  throwsMalformed(t, () => parseSignatureParams(`keyId="a",signature="${SIG}",Signature="${SIG}"`), 'duplicate parameter "signature"')
  throwsMalformed(t, () => parseSignatureParams(`keyId="a",signature="${SIG}",headers="date",HEADERS="host"`), 'duplicate parameter "headers"')
})

test('parseSignatureParams: length limits', async (t) => {
  const limits = { maxHeaderLength: 100, maxCoveredHeaders: 2, maxKeyIdLength: 5, maxSignatureLength: 8 }
  const ok = `keyId=abcde,signature="${SIG}",headers="a b"`
  t.equal(parseSignatureParams(ok, limits).keyId, 'abcde')

  // header length, checked before parsing (so even garbage gets this error)
  const padded = `keyId=k,signature="${SIG}"`.padEnd(100, ' ')
  t.equal(parseSignatureParams(padded, limits).keyId, 'k')
  throwsMalformed(t, () => parseSignatureParams(padded + ' ', limits), 'longer than 100 characters')
  throwsMalformed(t, () => parseSignatureParams('"'.repeat(101), limits), 'longer than 100 characters')

  throwsMalformed(t, () => parseSignatureParams(`keyId=abcdef,signature="${SIG}"`, limits), '"keyId" is longer than 5 characters')
  throwsMalformed(t, () => parseSignatureParams('keyId=k,signature="YWJjZGVmZw=="', limits), '"signature" is longer than 8 characters')
  t.equal(parseSignatureParams('keyId=k,signature="YWJjZGVm"', limits).signature, 'YWJjZGVm')
  throwsMalformed(t, () => parseSignatureParams(`keyId=k,signature="${SIG}",headers="a b c"`, limits), '"headers" lists more than 2 entries')
})

test('parseSignatureParams: default limits', async (t) => {
  t.same(DEFAULT_LIMITS, { maxHeaderLength: 8192, maxCoveredHeaders: 16, maxKeyIdLength: 1024, maxSignatureLength: 1400, maxFieldLines: 16 })
  t.ok(Object.isFrozen(DEFAULT_LIMITS))

  const base = `keyId=k,signature="${SIG}",x="`
  const exact = base + 'a'.repeat(8192 - base.length - 1) + '"'
  t.equal(exact.length, 8192)
  t.equal(parseSignatureParams(exact).keyId, 'k')
  throwsMalformed(t, () => parseSignatureParams(exact + ' '), 'longer than 8192 characters')

  t.equal(parseSignatureParams(`keyId="${'k'.repeat(1024)}",signature="${SIG}"`).keyId.length, 1024)
  throwsMalformed(t, () => parseSignatureParams(`keyId="${'k'.repeat(1025)}",signature="${SIG}"`), '"keyId" is longer than 1024 characters')

  t.equal(parseSignatureParams(`keyId=k,signature="${'A'.repeat(1400)}"`).signature.length, 1400)
  throwsMalformed(t, () => parseSignatureParams(`keyId=k,signature="${'A'.repeat(1404)}"`), '"signature" is longer than 1400 characters')

  const names = Array.from({ length: 33 }, (_, i) => `x-h${i}`)
  t.equal(parseSignatureParams(`keyId=k,signature="${SIG}",headers="${names.slice(0, 16).join(' ')}"`).headers.length, 16)
  throwsMalformed(t, () => parseSignatureParams(`keyId=k,signature="${SIG}",headers="${names.slice(0, 17).join(' ')}"`), '"headers" lists more than 16 entries')
})

test('parseSignatureParams: signature must be padded standard base64', async (t) => {
  for (const good of ['YQ==', 'YWI=', 'YWJj', 'YWJjZA==', '+/+/', 'A+B/CD==']) {
    t.equal(parseSignatureParams(`keyId=k,signature="${good}"`).signature, good, good)
  }
  for (const bad of ['YQ', 'YWI', 'Y', 'YQ=', 'YQ===', '=YQ=', 'Y=Q=', '-_-_', 'YW Jj', 'YWJj\tZA==', 'YWJj!A==', 'YWJjZA==YWJj']) {
    throwsMalformed(t, () => parseSignatureParams(`keyId=k,signature="${bad}"`), '"signature" is not base64')
  }
  // as an unquoted token too
  t.equal(parseSignatureParams('keyId=k,signature=YWJj').signature, 'YWJj')
})

test('parseSignatureParams: created must be an integer, expires may be decimal', async (t) => {
  const base = `keyId=k,signature="${SIG}",algorithm=hs2019`
  const p = parseSignatureParams(`${base},created=1402170695,expires="1402170699.25"`)
  t.equal(p.created, '1402170695')
  t.equal(p.expires, '1402170699.25')
  t.equal(parseSignatureParams(`${base},created="0",expires=1402170699`).created, '0')
  t.equal(parseSignatureParams(`${base},expires=1402170699`).expires, '1402170699')
  t.equal(parseSignatureParams(`${base},created=${'9'.repeat(15)}`).created, '9'.repeat(15))
  t.equal(parseSignatureParams(`${base},expires=1.123456789`).expires, '1.123456789')

  for (const bad of ['1.5', '-1', '+1', '1e3', 'abc', '', ' 1', '0x10', '9'.repeat(16), '1\u00b2']) {
    throwsMalformed(t, () => parseSignatureParams(`${base},created="${bad}"`), '"created" is not a Unix timestamp integer')
  }
  for (const bad of ['1.', '.5', '-1', '1e3', 'abc', '', '1.1234567890', '9'.repeat(16), '1.2.3']) {
    throwsMalformed(t, () => parseSignatureParams(`${base},expires="${bad}"`), '"expires" is not a Unix timestamp')
  }
})

test('parseSignatureParams: headers default', async (t) => {
  t.same(parseSignatureParams(`keyId=k,signature="${SIG}"`).headers, ['date'])
  t.same(parseSignatureParams(`keyId=k,signature="${SIG}",algorithm=rsa-sha256`).headers, ['date'])
  t.same(parseSignatureParams(`keyId=k,signature="${SIG}",algorithm=hmac-sha256`).headers, ['date'])
  t.same(parseSignatureParams(`keyId=k,signature="${SIG}",algorithm=hs2019`).headers, ['(created)'])
  t.same(parseSignatureParams(`keyId=k,signature="${SIG}",algorithm="HS2019"`).headers, ['(created)'])
})

test('parseSignatureParams: headers parameter', async (t) => {
  const parse = (headers: string) => parseSignatureParams(`keyId=k,signature="${SIG}",headers="${headers}"`).headers
  t.same(parse('(Request-Target) Host DATE x-Custom'), ['(request-target)', 'host', 'date', 'x-custom'])
  t.same(parse(' date  host '), ['date', 'host'])
  t.same(parse('date'), ['date'])
  t.same(parseSignatureParams(`keyId=k,signature="${SIG}",headers=date`).headers, ['date'])
  throwsMalformed(t, () => parse(''), '"headers" is empty')
  throwsMalformed(t, () => parse('   '), '"headers" is empty')
  throwsMalformed(t, () => parse('date host date'), '"headers" lists a header twice')
  throwsMalformed(t, () => parse('Date date'), '"headers" lists a header twice')
})

test('parseCoveredHeaders', async (t) => {
  t.same(parseCoveredHeaders('(request-target) Host  DATE', 3), ['(request-target)', 'host', 'date'])
  t.same(parseCoveredHeaders('a', 1), ['a'])
  throwsMalformed(t, () => parseCoveredHeaders('a b', 1), '"headers" lists more than 1 entries')
  throwsMalformed(t, () => parseCoveredHeaders('', 32), '"headers" is empty')
  throwsMalformed(t, () => parseCoveredHeaders(' ', 32), '"headers" is empty')
  throwsMalformed(t, () => parseCoveredHeaders('Host host', 32), '"headers" lists a header twice')
  // the count limit applies to distinct entries after empty ones are dropped
  t.same(parseCoveredHeaders('  a    b  ', 2), ['a', 'b'])
})

test('signatureCredentials: the Signature scheme', async (t) => {
  t.equal(signatureCredentials('Signature keyId="k",signature="x"'), 'keyId="k",signature="x"')
  t.equal(signatureCredentials('signature keyId=k'), 'keyId=k')
  t.equal(signatureCredentials('SIGNATURE keyId=k'), 'keyId=k')
  t.equal(signatureCredentials('SiGnAtUrE a=b'), 'a=b')
  // only the first SP is the separator; further spaces are OWS for the parser
  t.equal(signatureCredentials('Signature   a=b'), '  a=b')
  t.same(entries(parseAuthParams(signatureCredentials('Signature   a=b')!)), [['a', 'b']])
  t.equal(signatureCredentials('Signature '), '')
  t.equal(signatureCredentials(defaultTest.authorizationHeader!), defaultTest.signatureHeader)
})

test('signatureCredentials: other schemes and malformed values give undefined', async (t) => {
  for (const value of [
    'Signature',
    'signature',
    '',
    'Sig',
    'Basic dXNlcjpwYXNz',
    'Bearer abc.def.ghi',
    'Signatures a=b',
    'Signature\ta=b',
    'Signature,a=b',
    'Signature=a',
    'Signaturx a=b',
    ' Signature a=b',
    'XSignature a=b',
    'Digest username="u"'
  ]) {
    t.equal(signatureCredentials(value), undefined, JSON.stringify(value))
  }
})

test('quoted values with escapes still refuse control characters', async (t) => {
  t.throws(() => parseAuthParams('a="x\\"y\u0001z"'), { code: 'FST_CAVAGE_MALFORMED', message: /control/ })
  t.throws(() => parseAuthParams('a="x\u0001\\"y"'), { code: 'FST_CAVAGE_MALFORMED', message: /control/ }, 'before the escape')
  t.same(Object.fromEntries(parseAuthParams('a="x\\"y z"')), { a: 'x"y z' })
})

test('the covered-header cache stays bounded and returns the same lists', async (t) => {
  const sign = 'keyId="k",signature="AAAA",headers='
  const first = parseSignatureParams(`${sign}"date host"`).headers
  t.equal(parseSignatureParams(`${sign}"date host"`).headers, first, 'cached: the same frozen list')
  t.ok(Object.isFrozen(first))
  for (let i = 0; i < 100; i++) t.same(parseSignatureParams(`${sign}"date x-${i}"`).headers, ['date', `x-${i}`])
  const again = parseSignatureParams(`${sign}"date host"`).headers
  t.not(again, first, 'evicted, parsed anew')
  t.same(again, first)
})
