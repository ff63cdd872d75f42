import { plugin } from './plugin.js'

export { plugin as cavagePlugin }
export default plugin

export type { CavagePluginOptions, CavageRequestState, CavageDecorator, SecretLoader } from './plugin.js'
export type { CavageMode, CavageRouteConfig, CavageRouteOptions, PolicyOptions, RequiredHeader, RequiredHeaders } from './options.js'
export { DEFAULT_REQUIRED_HEADERS } from './options.js'
export { ALGORITHMS, DEFAULT_ALGORITHMS, type Algorithm, type Hs2019Rsa } from './algorithms.js'
export type { KeyMaterial, ExplicitKey } from './keys.js'
export { signRequest, type SignOptions, type RequestToSign, type SigningKey } from './sign.js'
export { buildSigningString, type SigningInput } from './canonicalize.js'
export { parseSignatureParams, type SignatureParams, type ParseLimits, DEFAULT_LIMITS } from './parse.js'

export * as errors from './errors.js'
export { isCavageError, type CavageError } from './errors.js'
export { MemoryReplayStore, type MemoryReplayStoreOptions, type ReplayStore } from './replay.js'
export { RedisReplayStore, type RedisReplayStoreOptions, type RedisLike } from './replay-redis.js'
export type { ReplayOptions } from './plugin.js'
export { digestHeader, contentDigestHeader, parseDigest, parseContentDigest, type DigestAlgorithm } from './digest.js'
export { createSignedFetch, prepareSignedFetch, type SignedFetchOptions, type SignedFetchCall, type FetchFunction } from './fetch.js'
export { activityPub, activityPubPolicy } from './activitypub.js'
export {
  createRemoteKeyLoader, isPrivateAddress, RemoteKeyRefusedError, RemoteKeyInvalidError, RemoteKeyUnavailableError,
  type RemoteKeyLoader, type RemoteKeyLoaderOptions, type RemoteKeyLoaderStats, type RemoteKeyError, type HostResolver, type ResolvedAddress
} from './remote-key-loader.js'
