import Fastify, { type FastifyRequest } from 'fastify'
import { generateKeyPairSync } from 'node:crypto'
import { expect, test } from 'tstyche'
import cavagePlugin, { type CavageRequestState, createSignedFetch, MemoryReplayStore, RedisReplayStore, type ReplayStore, type SecretLoader, signRequest } from '../lib/index.js'

const app = Fastify()

test('registration options', () => {
  expect(app.register(cavagePlugin, { secretLoader: async (keyId: string) => keyId === 'a' ? 'secret' : null })).type.not.toRaiseError()
  expect(app.register(cavagePlugin, {
    secretLoader: (_keyId, request) => { expect(request).type.toBe<FastifyRequest>(); return { key: generateKeyPairSync('ed25519').publicKey, algorithm: 'hs2019' } },
    requiredHeaders: ['(request-target)', 'host', ['date', '(created)']],
    clockSkew: 60,
    realm: 'api',
    algorithms: ['hs2019', 'hmac-sha256'],
    hs2019Rsa: 'pkcs1',
    limits: { maxHeaderLength: 4096 }
  })).type.not.toRaiseError()
  expect(app.register(cavagePlugin, { algorithms: ['hmac-md5'] })).type.toRaiseError()
  expect(app.register(cavagePlugin, { clockSkew: '300' })).type.toRaiseError()
  expect(app.register(cavagePlugin, { secretLoader: async () => 42 })).type.toRaiseError()
})

test('route config is checked at compile time', () => {
  expect(app.get('/a', { config: { cavage: 'required' } }, async () => 'ok')).type.not.toRaiseError()
  expect(app.get('/b', { config: { cavage: 'optional' } }, async () => 'ok')).type.not.toRaiseError()
  expect(app.get('/c', { config: { cavage: { mode: 'required', requiredHeaders: ['date'] } } }, async () => 'ok')).type.not.toRaiseError()
  expect(app.get('/d', { config: { cavage: 'requierd' } }, async () => 'ok')).type.toRaiseError()
  expect(app.get('/e', { config: { cavage: { requiredHeaders: ['date'] } } }, async () => 'ok')).type.toRaiseError()
})

test('request.cavage and the decorator', () => {
  app.get('/f', { config: { cavage: 'required' } }, async (request) => {
    expect(request.cavage).type.toBe<CavageRequestState | null>()
    if (request.cavage !== null) {
      expect(request.cavage.verified).type.toBe<boolean>()
      expect(request.cavage.keyId).type.toBe<string | null>()
      expect(request.cavage.headers).type.toBe<string[]>()
    }
    return 'ok'
  })
  expect(app.cavage.secretLoader).type.toBe<(loader: SecretLoader) => void>()
  expect(app.cavage.secretLoader(() => null)).type.toBe<void>()
  expect(app.cavage.secretLoader('nope')).type.toRaiseError()
  expect(signRequest({ method: 'GET', url: '/' }, { keyId: 'k', key: 's' })).type.toBe<Record<string, string>>()
  expect(signRequest({ method: 'GET', url: '/' }, { key: 's' })).type.toRaiseError()
})

test('client and replay stores', () => {
  const signedFetch = createSignedFetch({ keyId: 'access_key_1', key: '123456789' })
  expect(signedFetch('https://api.example/x', { method: 'POST', body: '{}' })).type.toBe<Promise<Response>>()
  expect(createSignedFetch({ keyId: 'k', key: 's', algorithm: 'md5' })).type.toRaiseError()
  expect(new MemoryReplayStore({ maxEntries: 10 })).type.toBeAssignableTo<ReplayStore>()
  expect(new RedisReplayStore({ url: 'redis://127.0.0.1', failOpen: true })).type.toBeAssignableTo<ReplayStore>()
  expect(app.register(cavagePlugin, { replay: { store: new MemoryReplayStore() } })).type.not.toRaiseError()
  expect(app.register(cavagePlugin, { replay: 'yes' })).type.toRaiseError()
  expect(app.get('/r', { config: { cavage: { mode: 'required', replay: false, bodyRequiredHeaders: ['digest'] } } }, async () => 'ok')).type.not.toRaiseError()
  expect(app.register(cavagePlugin, { requiredHeaders: { GET: ['host'], '*': ['date'] } })).type.not.toRaiseError()
})
