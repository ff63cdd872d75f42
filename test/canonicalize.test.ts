import { test, type Test } from 'tap'
import { buildSigningString, canonicalValue, collectHeaderValues, type SigningInput, trimOws } from '../lib/canonicalize.js'
import { HeaderMissingError, MalformedSignatureError } from '../lib/errors.js'
import { parseSignatureParams } from '../lib/parse.js'
import {
  allHeadersTest10,
  allHeadersTest12,
  basicTest,
  canonicalizationExample,
  defaultTest,
  testRequest
} from './fixtures/draft-vectors.js'

function input (overrides: Partial<SigningInput>): SigningInput {
  return {
    method: 'GET',
    target: '/',
    rawHeaders: [],
    coveredHeaders: [],
    algorithm: undefined,
    created: undefined,
    expires: undefined,
    ...overrides
  }
}

function caught (fn: () => unknown): unknown {
  try {
    fn()
  } catch (err) {
    return err
  }
  return undefined
}

function throwsMalformed (t: Test, fn: () => unknown, reason: string): void {
  const err = caught(fn)
  t.ok(err instanceof MalformedSignatureError, reason)
  t.match(err, { code: 'FST_CAVAGE_MALFORMED', statusCode: 401, message: `Malformed signature header: ${reason}` })
}

function throwsMissing (t: Test, fn: () => unknown, name: string): void {
  const err = caught(fn)
  t.ok(err instanceof HeaderMissingError, `HeaderMissingError for ${name}`)
  t.match(err, { code: 'FST_CAVAGE_HEADER_MISSING', statusCode: 401, message: `Covered header missing from the request: ${name}` })
}

test('trimOws trims SP and HTAB only', async (t) => {
  t.equal(trimOws(' \t a b \t '), 'a b')
  t.equal(trimOws('abc'), 'abc')
  t.equal(trimOws(''), '')
  t.equal(trimOws(' \t \t'), '')
  t.equal(trimOws('a  \t b'), 'a  \t b')
  t.equal(trimOws('  x'), 'x')
  t.equal(trimOws('x\t'), 'x')
  // other whitespace is part of the value
  t.equal(trimOws('\u00a0x\u00a0'), '\u00a0x\u00a0')
  t.equal(trimOws('\nx\r'), '\nx\r')
  t.equal(trimOws('\u000bx\u000c'), '\u000bx\u000c')
  t.equal(trimOws(' \u2003x\u2003 '), '\u2003x\u2003')
})

test('canonicalValue unfolds obs-fold to one SP and trims OWS', async (t) => {
  t.equal(canonicalValue('Example header\r\n    with some whitespace.'), 'Example header with some whitespace.')
  t.equal(canonicalValue('a\r\n\tb'), 'a b')
  t.equal(canonicalValue('a \t \r\n \t b'), 'a b')
  t.equal(canonicalValue('a\n b'), 'a b')
  t.equal(canonicalValue('a\r\n b\r\n  c'), 'a b c')
  t.equal(canonicalValue('  a\r\n  b  '), 'a b')
  // nothing else changes
  t.equal(canonicalValue('  a   b\t\tc  '), 'a   b\t\tc')
  t.equal(canonicalValue('A, B;q=1, "C"'), 'A, B;q=1, "C"')
  t.equal(canonicalValue(''), '')
  t.equal(canonicalValue('\t'), '')
})

test('collectHeaderValues joins repeated fields with ", " in message order', async (t) => {
  const values = collectHeaderValues([
    'Cache-Control', 'max-age=60',
    'X-Other', 'ignored',
    'cache-control', ' must-revalidate ',
    'CACHE-CONTROL', 'no-transform',
    'Date', 'Sun, 05 Jan 2014 21:31:40 GMT'
  ], new Set(['cache-control', 'date']))
  t.same([...values.entries()], [
    ['cache-control', 'max-age=60, must-revalidate, no-transform'],
    ['date', 'Sun, 05 Jan 2014 21:31:40 GMT']
  ])
})

test('collectHeaderValues: names are case-insensitive; values are canonicalized', async (t) => {
  const values = collectHeaderValues(['X-EXAMPLE', ' a\r\n  b ', 'x-Empty', '   '], new Set(['x-example', 'x-empty']))
  t.same([...values.entries()], [['x-example', 'a b'], ['x-empty', '']])
  // empty instances still take their place in the list
  t.same([...collectHeaderValues(['A', '', 'a', 'x', 'A', ''], new Set(['a'])).entries()], [['a', ', x, ']])
})

test('collectHeaderValues ignores names that are not covered', async (t) => {
  const values = collectHeaderValues(['Host', 'example.com', 'Date', 'x', 'Digest', 'y'], new Set(['date']))
  t.same([...values.entries()], [['date', 'x']])
  t.equal(collectHeaderValues(['Host', 'example.com'], new Set()).size, 0)
  t.equal(collectHeaderValues([], new Set(['host'])).size, 0)
  // a dangling name without a value is ignored
  t.same([...collectHeaderValues(['Host', 'a', 'Host'], new Set(['host'])).entries()], [['host', 'a']])
})

test('collectHeaderValues: prototype names are plain names', async (t) => {
  const raw = ['constructor', 'c', '__proto__', 'p', 'toString', 's', 'hasOwnProperty', 'h']
  const none = collectHeaderValues(raw, new Set(['date']))
  t.equal(none.size, 0)
  t.equal(none.get('constructor'), undefined)
  t.equal(none.get('__proto__'), undefined)
  t.equal(none.get('toString'), undefined)

  const covered = collectHeaderValues(raw, new Set(['constructor', '__proto__', 'tostring']))
  t.same([...covered.entries()], [['constructor', 'c'], ['__proto__', 'p'], ['tostring', 's']])

  // and in the signing string too
  throwsMissing(t, () => buildSigningString(input({ coveredHeaders: ['constructor'] })), 'constructor')
  throwsMissing(t, () => buildSigningString(input({ coveredHeaders: ['__proto__'] })), '__proto__')
  t.equal(buildSigningString(input({ rawHeaders: ['__proto__', 'x'], coveredHeaders: ['__proto__'] })).signingString, '__proto__: x')
})

test('buildSigningString: the §2.3 example', async (t) => {
  const ex = canonicalizationExample
  for (const algorithm of ['hs2019', undefined]) {
    const { signingString, values } = buildSigningString({
      method: ex.method,
      target: ex.path,
      rawHeaders: ex.rawHeaders,
      coveredHeaders: ex.headers.split(' '),
      algorithm,
      created: String(ex.created),
      expires: undefined
    })
    t.equal(signingString, ex.signingString, String(algorithm))
    t.equal(signingString, [
      '(request-target): get /foo',
      '(created): 1402170695',
      'host: example.org',
      'date: Tue, 07 Jun 2014 20:51:35 GMT',
      'cache-control: max-age=60, must-revalidate',
      'x-emptyheader: ',
      'x-example: Example header with some whitespace.'
    ].join('\n'))
    t.same([...values.entries()], [
      ['host', 'example.org'],
      ['date', 'Tue, 07 Jun 2014 20:51:35 GMT'],
      ['x-example', 'Example header with some whitespace.'],
      ['x-emptyheader', ''],
      ['cache-control', 'max-age=60, must-revalidate']
    ])
  }
})

test('buildSigningString: the §2.3 example from the raw, obs-folded request', async (t) => {
  const ex = canonicalizationExample
  // Split the raw request into name/value pairs, keeping each obs-fold in its value.
  const lines = ex.rawRequest.split('\r\n').slice(1, -2)
  const rawHeaders: string[] = []
  for (const line of lines) {
    if (line.startsWith(' ') || line.startsWith('\t')) {
      rawHeaders[rawHeaders.length - 1] += `\r\n${line}`
    } else {
      const colon = line.indexOf(':')
      rawHeaders.push(line.slice(0, colon), line.slice(colon + 1))
    }
  }
  t.same(rawHeaders.filter((_, i) => i % 2 === 0), ['Host', 'Date', 'X-Example', 'X-EmptyHeader', 'Cache-Control', 'Cache-Control'])
  t.equal(rawHeaders[5], ' Example header\r\n    with some whitespace.')
  const { signingString } = buildSigningString(input({
    method: 'GET',
    target: ex.path,
    rawHeaders,
    coveredHeaders: ex.headers.split(' '),
    algorithm: 'hs2019',
    created: String(ex.created)
  }))
  t.equal(signingString, ex.signingString)
})

test('buildSigningString: Appendix C signing strings from testRequest', async (t) => {
  for (const [name, vector] of Object.entries({ defaultTest, basicTest, allHeadersTest10 })) {
    const params = parseSignatureParams(vector.signatureHeader)
    const { signingString } = buildSigningString({
      method: testRequest.method,
      target: testRequest.path,
      rawHeaders: testRequest.rawHeaders,
      coveredHeaders: params.headers,
      algorithm: params.algorithm,
      created: params.created,
      expires: params.expires
    })
    t.equal(signingString, vector.signingString, name)
  }
  t.equal(allHeadersTest10.signingString.split('\n')[0], '(request-target): post /foo?param=value&pet=dog')
})

test('buildSigningString: the values map holds covered header values only', async (t) => {
  const { values } = buildSigningString(input({
    method: testRequest.method,
    target: testRequest.path,
    rawHeaders: testRequest.rawHeaders,
    coveredHeaders: ['(request-target)', 'host', 'date', 'content-type', 'digest']
  }))
  t.same([...values.entries()], [
    ['host', 'example.com'],
    ['date', 'Sun, 05 Jan 2014 21:31:40 GMT'],
    ['content-type', 'application/json'],
    ['digest', 'SHA-256=X48E9qOokqqrvdts8nOJRJN3OWDUoyWxBf7kbu9DBPE=']
  ])
  t.equal(values.has('(request-target)'), false)
  t.equal(values.has('content-length'), false)
})

test('buildSigningString: -12 C.3 with rsa-sha256 must error; with hs2019 it builds the full string', async (t) => {
  const params = parseSignatureParams(allHeadersTest12.signatureHeader)
  const request = {
    method: testRequest.method,
    target: testRequest.path,
    rawHeaders: testRequest.rawHeaders,
    coveredHeaders: params.headers,
    created: params.created,
    expires: params.expires
  }
  throwsMalformed(t, () => buildSigningString({ ...request, algorithm: params.algorithm }),
    '"(created)" cannot be signed with algorithm "rsa-sha256"')
  t.equal(buildSigningString({ ...request, algorithm: 'hs2019' }).signingString, allHeadersTest12.constructedSigningString)
})

test('buildSigningString: (request-target) lowercases only the method', async (t) => {
  const build = (method: string, target: string) =>
    buildSigningString(input({ method, target, coveredHeaders: ['(request-target)'] })).signingString
  t.equal(build('POST', '/Foo%2Fbar?A=B&a=b'), '(request-target): post /Foo%2Fbar?A=B&a=b')
  t.equal(build('Get', '/'), '(request-target): get /')
  t.equal(build('PATCH', '/a/../b/./c//d?x=%7e&y= z#frag'), '(request-target): patch /a/../b/./c//d?x=%7e&y= z#frag')
  t.equal(build('OPTIONS', '*'), '(request-target): options *')
})

test('buildSigningString: lines follow the order of headers and are joined by \\n', async (t) => {
  const { signingString } = buildSigningString(input({
    method: 'PUT',
    target: '/x',
    rawHeaders: ['A', '1', 'B', '2', 'C', '3'],
    coveredHeaders: ['c', '(request-target)', 'a', 'b']
  }))
  t.equal(signingString, 'c: 3\n(request-target): put /x\na: 1\nb: 2')
  t.equal(buildSigningString(input({ rawHeaders: ['A', '1'], coveredHeaders: ['a'] })).signingString, 'a: 1')
  t.equal(buildSigningString(input({})).signingString, '')
})

test('buildSigningString: an empty value gives "name: "', async (t) => {
  const { signingString, values } = buildSigningString(input({
    rawHeaders: ['X-Empty', '', 'X-Blank', ' \t ', 'X-Last', ''],
    coveredHeaders: ['x-empty', 'x-blank', 'x-last']
  }))
  t.equal(signingString, 'x-empty: \nx-blank: \nx-last: ')
  t.same([...values.entries()], [['x-empty', ''], ['x-blank', ''], ['x-last', '']])
})

test('buildSigningString: a missing covered header throws HeaderMissingError', async (t) => {
  throwsMissing(t, () => buildSigningString(input({ rawHeaders: ['Date', 'x'], coveredHeaders: ['date', 'digest'] })), 'digest')
  throwsMissing(t, () => buildSigningString(input({ coveredHeaders: ['(request-target)', 'date'] })), 'date')
  throwsMissing(t, () => buildSigningString(input({ rawHeaders: ['Date'], coveredHeaders: ['date'] })), 'date')
  throwsMissing(t, () => buildSigningString(input({ rawHeaders: ['Host', 'a'], coveredHeaders: ['x-host'] })), 'x-host')
})

test('buildSigningString: (created) and (expires) are errors with rsa, hmac and ecdsa algorithms', async (t) => {
  for (const algorithm of ['rsa-sha256', 'rsa-sha1', 'hmac-sha256', 'hmac-sha1', 'ecdsa-sha256', 'rsa-pss-sha512', 'hmacfoo']) {
    for (const name of ['(created)', '(expires)']) {
      throwsMalformed(t, () => buildSigningString(input({ coveredHeaders: [name], algorithm, created: '1', expires: '2' })),
        `"${name}" cannot be signed with algorithm "${algorithm}"`)
    }
  }
})

test('buildSigningString: (created) and (expires) with hs2019 or no algorithm', async (t) => {
  for (const algorithm of ['hs2019', undefined, 'ed25519', 'x-rsa']) {
    const { signingString, values } = buildSigningString(input({
      coveredHeaders: ['(created)', '(expires)', '(request-target)'],
      method: 'DELETE',
      target: '/k',
      algorithm,
      created: '1402170695',
      expires: '1402170699.5'
    }))
    // (expires) signs the expires parameter (the draft's step 3 says "created", a typo)
    t.equal(signingString, '(created): 1402170695\n(expires): 1402170699.5\n(request-target): delete /k', String(algorithm))
    t.equal(values.size, 0)
  }
})

test('buildSigningString: (created) / (expires) covered but the parameter missing', async (t) => {
  throwsMalformed(t, () => buildSigningString(input({ coveredHeaders: ['(created)'], algorithm: 'hs2019', expires: '2' })),
    '"(created)" is covered but the "created" parameter is missing')
  throwsMalformed(t, () => buildSigningString(input({ coveredHeaders: ['(created)', '(expires)'], created: '1' })),
    '"(expires)" is covered but the "expires" parameter is missing')
})

test('buildSigningString: host falls back to the HTTP/2 :authority pseudo-header', async (t) => {
  const h2 = buildSigningString(input({
    method: 'GET',
    target: '/x',
    rawHeaders: [':method', 'GET', ':authority', 'example.com:8443', ':path', '/x', 'date', 'd'],
    coveredHeaders: ['(request-target)', 'host', 'date']
  }))
  t.equal(h2.signingString, '(request-target): get /x\nhost: example.com:8443\ndate: d')
  t.same([...h2.values.entries()], [['date', 'd'], ['host', 'example.com:8443']])

  // a Host field wins over :authority
  const both = buildSigningString(input({
    rawHeaders: [':authority', 'a.example', 'Host', 'b.example'],
    coveredHeaders: ['host']
  }))
  t.equal(both.signingString, 'host: b.example')

  // :authority is not used when host is not covered
  const notCovered = buildSigningString(input({ rawHeaders: [':authority', 'a.example', 'Date', 'd'], coveredHeaders: ['date'] }))
  t.same([...notCovered.values.entries()], [['date', 'd']])

  throwsMissing(t, () => buildSigningString(input({ rawHeaders: [':path', '/'], coveredHeaders: ['host'] })), 'host')
})
