import {
  constants,
  createHmac,
  createPrivateKey,
  createPublicKey,
  createSecretKey,
  generateKeyPairSync,
  type KeyObject,
  sign as cryptoSign,
  verify as cryptoVerify
} from 'node:crypto'
import { test } from 'tap'
import {
  ALGORITHMS,
  type Algorithm,
  DEFAULT_ALGORITHMS,
  fitsKey,
  isAlgorithm,
  type KeyKind,
  naturalAlgorithm,
  type Scheme,
  schemesFor,
  signScheme,
  verifyScheme
} from '../lib/algorithms.js'
import { parseSignatureParams } from '../lib/parse.js'
import {
  allHeadersTest10,
  allHeadersTest12,
  basicTest,
  defaultTest,
  draft08,
  privateKeyPem,
  publicKeyPem
} from './fixtures/draft-vectors.js'

const rsa = generateKeyPairSync('rsa', { modulusLength: 2048 })
const pss = generateKeyPairSync('rsa-pss', { modulusLength: 2048 })
const ec = generateKeyPairSync('ec', { namedCurve: 'P-256' })
const ed = generateKeyPairSync('ed25519')
const secret = createSecretKey(Buffer.from('a shared secret of some length'))

const KINDS: KeyKind[] = ['hmac', 'rsa', 'rsa-pss', 'ec-p256', 'ed25519']

interface Pair { signKey: KeyObject, verifyKey: KeyObject, signatureLength: number }

const SCHEMES: Record<Scheme, Pair> = {
  'hmac-sha256': { signKey: secret, verifyKey: secret, signatureLength: 32 },
  'hmac-sha512': { signKey: secret, verifyKey: secret, signatureLength: 64 },
  'hmac-sha1': { signKey: secret, verifyKey: secret, signatureLength: 20 },
  'rsa-pkcs1-sha256': { signKey: rsa.privateKey, verifyKey: rsa.publicKey, signatureLength: 256 },
  'rsa-pkcs1-sha1': { signKey: rsa.privateKey, verifyKey: rsa.publicKey, signatureLength: 256 },
  'rsa-pss-sha512': { signKey: rsa.privateKey, verifyKey: rsa.publicKey, signatureLength: 256 },
  'ecdsa-sha256': { signKey: ec.privateKey, verifyKey: ec.publicKey, signatureLength: 0 },
  'ecdsa-sha512': { signKey: ec.privateKey, verifyKey: ec.publicKey, signatureLength: 0 },
  ed25519: { signKey: ed.privateKey, verifyKey: ed.publicKey, signatureLength: 64 }
}
const ALL_SCHEMES = Object.keys(SCHEMES) as Scheme[]

const DATA = '(request-target): post /foo?param=value&pet=dog\nhost: example.com\ndate: Sun, 05 Jan 2014 21:31:40 GMT\nx: caf\u00e9 \u2603'

function verifyPss (key: KeyObject, data: Buffer, signature: Buffer, saltLength: number): boolean {
  return cryptoVerify('sha512', data, { key, padding: constants.RSA_PKCS1_PSS_PADDING, saltLength }, signature)
}

function flip (signature: Buffer, index = 0): Buffer {
  const copy = Buffer.from(signature)
  copy[index] = copy[index]! ^ 0x01
  return copy
}

test('isAlgorithm', async (t) => {
  t.same(ALGORITHMS, ['hs2019', 'hmac-sha256', 'rsa-sha256', 'ecdsa-sha256', 'rsa-sha1', 'hmac-sha1'])
  t.same(DEFAULT_ALGORITHMS, ['hs2019', 'hmac-sha256', 'rsa-sha256', 'ecdsa-sha256'])
  for (const name of ALGORITHMS) t.equal(isAlgorithm(name), true, name)
  for (const name of ['HS2019', 'Rsa-Sha256', 'rsa-sha512', 'ecdsa-sha512', 'ed25519', 'hmac-sha512', 'rsa-pss-sha512', '', ' hs2019', 'hs2019 ', 'constructor', 'toString']) {
    t.equal(isAlgorithm(name), false, name)
  }
  for (const value of [undefined, null, 42, {}, ['hs2019'], { toString: () => 'hs2019' }]) {
    t.equal(isAlgorithm(value), false, String(value))
  }
})

test('fitsKey', async (t) => {
  const expected: Record<Algorithm, KeyKind[]> = {
    hs2019: ['hmac', 'rsa', 'rsa-pss', 'ec-p256', 'ed25519'],
    'hmac-sha256': ['hmac'],
    'hmac-sha1': ['hmac'],
    'rsa-sha256': ['rsa'],
    'rsa-sha1': ['rsa'],
    'ecdsa-sha256': ['ec-p256']
  }
  for (const algorithm of ALGORITHMS) {
    for (const kind of KINDS) {
      t.equal(fitsKey(algorithm, kind), expected[algorithm].includes(kind), `${algorithm} / ${kind}`)
    }
  }
})

test('naturalAlgorithm', async (t) => {
  t.same(Object.fromEntries(KINDS.map((kind) => [kind, naturalAlgorithm(kind)])), {
    hmac: 'hmac-sha256',
    rsa: 'rsa-sha256',
    'rsa-pss': 'hs2019',
    'ec-p256': 'ecdsa-sha256',
    ed25519: 'hs2019'
  })
})

test('schemesFor: legacy algorithms name one scheme', async (t) => {
  const expected: Record<Exclude<Algorithm, 'hs2019'>, Scheme> = {
    'hmac-sha256': 'hmac-sha256',
    'hmac-sha1': 'hmac-sha1',
    'rsa-sha256': 'rsa-pkcs1-sha256',
    'rsa-sha1': 'rsa-pkcs1-sha1',
    'ecdsa-sha256': 'ecdsa-sha256'
  }
  for (const [algorithm, scheme] of Object.entries(expected) as Array<[Algorithm, Scheme]>) {
    t.same(schemesFor(algorithm, 'rsa'), [scheme], algorithm)
    t.same(schemesFor(algorithm, 'rsa', 'pss'), [scheme], `${algorithm} pss`)
    t.same(schemesFor(algorithm, 'hmac', 'pkcs1'), [scheme], `${algorithm} pkcs1`)
  }
})

test('schemesFor: hs2019 per key kind', async (t) => {
  t.same(schemesFor('hs2019', 'hmac'), ['hmac-sha512'])
  t.same(schemesFor('hs2019', 'rsa'), ['rsa-pkcs1-sha256', 'rsa-pss-sha512'])
  t.same(schemesFor('hs2019', 'rsa-pss'), ['rsa-pss-sha512'])
  t.same(schemesFor('hs2019', 'ec-p256'), ['ecdsa-sha512'])
  t.same(schemesFor('hs2019', 'ed25519'), ['ed25519'])
})

test('schemesFor: the hs2019Rsa option', async (t) => {
  t.same(schemesFor('hs2019', 'rsa', 'both'), ['rsa-pkcs1-sha256', 'rsa-pss-sha512'])
  t.same(schemesFor('hs2019', 'rsa', 'pss'), ['rsa-pss-sha512'])
  t.same(schemesFor('hs2019', 'rsa', 'pkcs1'), ['rsa-pkcs1-sha256'])
  // it only affects plain RSA keys
  for (const option of ['both', 'pss', 'pkcs1'] as const) {
    t.same(schemesFor('hs2019', 'rsa-pss', option), ['rsa-pss-sha512'], option)
    t.same(schemesFor('hs2019', 'hmac', option), ['hmac-sha512'], option)
    t.same(schemesFor('hs2019', 'ec-p256', option), ['ecdsa-sha512'], option)
    t.same(schemesFor('hs2019', 'ed25519', option), ['ed25519'], option)
  }
})

test('signScheme / verifyScheme round trip for every scheme', async (t) => {
  for (const scheme of ALL_SCHEMES) {
    const { signKey, verifyKey, signatureLength } = SCHEMES[scheme]
    const signature = signScheme(scheme, signKey, DATA)
    t.ok(Buffer.isBuffer(signature), scheme)
    if (signatureLength > 0) t.equal(signature.length, signatureLength, `${scheme} length`)
    t.equal(verifyScheme(scheme, verifyKey, DATA, signature), true, `${scheme} verifies`)
    t.equal(verifyScheme(scheme, verifyKey, DATA + ' ', signature), false, `${scheme} other data`)
    t.equal(verifyScheme(scheme, verifyKey, DATA.replace('post', 'get'), signature), false, `${scheme} other data`)
    t.equal(verifyScheme(scheme, verifyKey, DATA, flip(signature, signature.length - 1)), false, `${scheme} flipped bit`)
  }
})

test('signScheme produces the expected bytes', async (t) => {
  const data = Buffer.from(DATA, 'utf8')
  t.same(signScheme('hmac-sha256', secret, DATA), createHmac('sha256', secret).update(data).digest())
  t.same(signScheme('hmac-sha512', secret, DATA), createHmac('sha512', secret).update(data).digest())
  t.same(signScheme('hmac-sha1', secret, DATA), createHmac('sha1', secret).update(data).digest())
  // PKCS#1 v1.5 and Ed25519 are deterministic
  t.same(signScheme('rsa-pkcs1-sha256', rsa.privateKey, DATA), cryptoSign('sha256', data, rsa.privateKey))
  t.same(signScheme('rsa-pkcs1-sha1', rsa.privateKey, DATA), cryptoSign('sha1', data, rsa.privateKey))
  t.same(signScheme('ed25519', ed.privateKey, DATA), cryptoSign(null, data, ed.privateKey))
  // ECDSA is DER encoded
  const der = signScheme('ecdsa-sha256', ec.privateKey, DATA)
  t.equal(der[0], 0x30)
  t.equal(der[1], der.length - 2)
  // RSA-PSS uses a salt as long as the digest: it verifies with that exact salt length
  const pssSignature = signScheme('rsa-pss-sha512', rsa.privateKey, DATA)
  t.equal(verifyPss(rsa.publicKey, data, pssSignature, 64), true)
  t.equal(verifyPss(rsa.publicKey, data, pssSignature, 32), false)
})

test('HMAC: a signature of the wrong length is false', async (t) => {
  for (const scheme of ['hmac-sha256', 'hmac-sha512', 'hmac-sha1'] as const) {
    const signature = signScheme(scheme, secret, DATA)
    t.equal(verifyScheme(scheme, secret, DATA, signature.subarray(0, signature.length - 1)), false, `${scheme} truncated`)
    t.equal(verifyScheme(scheme, secret, DATA, Buffer.concat([signature, Buffer.from([0])])), false, `${scheme} extended`)
    t.equal(verifyScheme(scheme, secret, DATA, Buffer.alloc(0)), false, `${scheme} empty`)
    t.equal(verifyScheme(scheme, secret, DATA, Buffer.alloc(signature.length)), false, `${scheme} zeros`)
    // another secret
    t.equal(verifyScheme(scheme, createSecretKey(Buffer.from('another secret')), DATA, signature), false, `${scheme} other secret`)
  }
})

test('ECDSA accepts DER and raw r||s', async (t) => {
  const data = Buffer.from(DATA, 'utf8')
  for (const [scheme, hash] of [['ecdsa-sha256', 'sha256'], ['ecdsa-sha512', 'sha512']] as const) {
    const raw = cryptoSign(hash, data, { key: ec.privateKey, dsaEncoding: 'ieee-p1363' })
    t.equal(raw.length, 64)
    t.equal(verifyScheme(scheme, ec.publicKey, DATA, raw), true, `${scheme} raw`)
    t.equal(verifyScheme(scheme, ec.publicKey, DATA + '.', raw), false, `${scheme} raw, other data`)
    t.equal(verifyScheme(scheme, ec.publicKey, DATA, flip(raw, 40)), false, `${scheme} raw, flipped`)

    const der = cryptoSign(hash, data, { key: ec.privateKey, dsaEncoding: 'der' })
    t.equal(verifyScheme(scheme, ec.publicKey, DATA, der), true, `${scheme} der`)
    // a raw signature under the other hash
    const otherRaw = cryptoSign(hash === 'sha256' ? 'sha512' : 'sha256', data, { key: ec.privateKey, dsaEncoding: 'ieee-p1363' })
    t.equal(verifyScheme(scheme, ec.publicKey, DATA, otherRaw), false, `${scheme} raw, other hash`)
    // 64 bytes that are neither valid raw nor DER
    t.equal(verifyScheme(scheme, ec.publicKey, DATA, Buffer.alloc(64, 1)), false, `${scheme} 64 junk bytes`)
    t.equal(verifyScheme(scheme, ec.publicKey, DATA, Buffer.alloc(64)), false, `${scheme} 64 zero bytes`)
  }
})

test('RSA-PSS verifies salt length = digest length and the maximum salt length', async (t) => {
  const data = Buffer.from(DATA, 'utf8')
  for (const [name, pair] of [['rsa', rsa], ['rsa-pss', pss]] as const) {
    for (const [label, saltLength] of [
      ['digest', constants.RSA_PSS_SALTLEN_DIGEST],
      ['max', constants.RSA_PSS_SALTLEN_MAX_SIGN],
      ['32', 32],
      ['0', 0]
    ] as const) {
      const signature = cryptoSign('sha512', data, { key: pair.privateKey, padding: constants.RSA_PKCS1_PSS_PADDING, saltLength })
      t.equal(verifyScheme('rsa-pss-sha512', pair.publicKey, DATA, signature), true, `${name} salt ${label}`)
      t.equal(verifyScheme('rsa-pss-sha512', pair.publicKey, DATA + 'x', signature), false, `${name} salt ${label}, other data`)
    }
    // PSS with SHA-256 is not rsa-pss-sha512
    const sha256 = cryptoSign('sha256', data, { key: pair.privateKey, padding: constants.RSA_PKCS1_PSS_PADDING, saltLength: 32 })
    t.equal(verifyScheme('rsa-pss-sha512', pair.publicKey, DATA, sha256), false, `${name} pss-sha256`)
  }
  // signScheme with an RSASSA-PSS key
  const signature = signScheme('rsa-pss-sha512', pss.privateKey, DATA)
  t.equal(signature.length, 256)
  t.equal(verifyScheme('rsa-pss-sha512', pss.publicKey, DATA, signature), true)
  // a PSS key cannot verify PKCS#1 v1.5, and says so with false
  t.equal(verifyScheme('rsa-pkcs1-sha256', pss.publicKey, DATA, signature), false)
  t.equal(verifyScheme('rsa-pkcs1-sha256', pss.publicKey, DATA, signScheme('rsa-pkcs1-sha256', rsa.privateKey, DATA)), false)
})

test('garbage and short signatures are false and never throw', async (t) => {
  const junk = [
    Buffer.alloc(0),
    Buffer.from([0]),
    Buffer.from('x'),
    Buffer.alloc(32, 0xff),
    Buffer.alloc(64, 0x7f),
    Buffer.alloc(255, 1),
    Buffer.alloc(256),
    Buffer.alloc(256, 0xff),
    Buffer.alloc(257, 2),
    Buffer.alloc(1024, 3),
    Buffer.from('3006020101020101', 'hex'),
    Buffer.from('30440220', 'hex')
  ]
  for (const scheme of ALL_SCHEMES) {
    const { verifyKey } = SCHEMES[scheme]
    for (const signature of junk) {
      let result: unknown
      t.doesNotThrow(() => { result = verifyScheme(scheme, verifyKey, DATA, signature) }, `${scheme} ${signature.length} bytes`)
      t.equal(result, false, `${scheme} ${signature.toString('hex').slice(0, 16)} (${signature.length} bytes)`)
    }
  }
})

test('a key of the wrong kind gives false, not a throw', async (t) => {
  const signature = signScheme('ed25519', ed.privateKey, DATA)
  t.equal(verifyScheme('ed25519', ec.publicKey, DATA, signature), false)
  t.equal(verifyScheme('ecdsa-sha256', ed.publicKey, DATA, signature), false)
  t.equal(verifyScheme('rsa-pkcs1-sha256', ec.publicKey, DATA, signature), false)
  t.equal(verifyScheme('rsa-pss-sha512', ed.publicKey, DATA, signature), false)
})

test('a signature made with one scheme does not verify under another', async (t) => {
  for (const a of ALL_SCHEMES) {
    const signature = signScheme(a, SCHEMES[a].signKey, DATA)
    for (const b of ALL_SCHEMES) {
      if (a === b) continue
      t.equal(verifyScheme(b, SCHEMES[b].verifyKey, DATA, signature), false, `${a} under ${b}`)
    }
  }
})

test('the draft vectors verify with rsa-pkcs1-sha256', async (t) => {
  const publicKey = createPublicKey(publicKeyPem)
  const privateKey = createPrivateKey(privateKeyPem)
  const vectors = {
    defaultTest,
    basicTest,
    allHeadersTest10,
    'draft08.defaultTest': draft08.defaultTest,
    'draft08.basicTest': draft08.basicTest,
    'draft08.allHeadersTest': draft08.allHeadersTest
  }
  for (const [name, vector] of Object.entries(vectors)) {
    const { signature, algorithm } = parseSignatureParams(vector.signatureHeader)
    t.equal(algorithm, 'rsa-sha256')
    t.same(schemesFor('rsa-sha256', 'rsa'), ['rsa-pkcs1-sha256'])
    const bytes = Buffer.from(signature, 'base64')
    t.equal(verifyScheme('rsa-pkcs1-sha256', publicKey, vector.signingString, bytes), true, `${name} verifies`)
    t.equal(verifyScheme('rsa-pkcs1-sha256', publicKey, vector.signingString + '\n', bytes), false, `${name} trailing newline`)
    t.equal(verifyScheme('rsa-pkcs1-sha1', publicKey, vector.signingString, bytes), false, `${name} sha1`)
    t.equal(verifyScheme('rsa-pss-sha512', publicKey, vector.signingString, bytes), false, `${name} pss`)
    // PKCS#1 v1.5 is deterministic: re-signing gives the printed bytes
    t.equal(signScheme('rsa-pkcs1-sha256', privateKey, vector.signingString).toString('base64'), signature, `${name} re-signed`)
  }
})

test('-12 C.3: the printed signature does not cover its own headers list', async (t) => {
  const publicKey = createPublicKey(publicKeyPem)
  const printed = Buffer.from(parseSignatureParams(allHeadersTest12.signatureHeader).signature, 'base64')
  t.equal(verifyScheme('rsa-pkcs1-sha256', publicKey, allHeadersTest12.signingString, printed), true)
  t.equal(verifyScheme('rsa-pkcs1-sha256', publicKey, allHeadersTest12.constructedSigningString, printed), false)
  const constructed = Buffer.from(allHeadersTest12.constructedSignature, 'base64')
  t.equal(verifyScheme('rsa-pkcs1-sha256', publicKey, allHeadersTest12.constructedSigningString, constructed), true)
})
