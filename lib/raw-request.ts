/** An HTTP/1.1 request as read from a file or stdin by `cavage explain`. */
export interface RawRequest {
  method: string
  /** The request-target exactly as written on the request line. */
  target: string
  /** Flat name/value list in message order, like Node's `rawHeaders`. */
  rawHeaders: string[]
  body: Buffer
  /** Things a server would read differently from a quick look at the text. */
  notes: string[]
}

const REQUEST_LINE = /^([!#$%&'*+.^_`|~0-9A-Za-z-]+) (\S+) HTTP\/1\.[01]$/
const HEADER_LINE = /^([!#$%&'*+.^_`|~0-9A-Za-z-]+):(.*)$/

export class RawRequestError extends Error {}

function fail (message: string): never {
  throw new RawRequestError(message)
}

/** Finds the blank line that ends the head, with CRLF or bare LF line ends. */
function splitHead (input: Buffer): { head: string, rest: Buffer } {
  const text = input.toString('latin1')
  const match = /\r?\n\r?\n/.exec(text)
  if (match === null) fail('no blank line after the headers: end the head with an empty line')
  return { head: text.slice(0, match.index), rest: input.subarray(match.index + match[0].length) }
}

function parseHeaders (lines: readonly string[]): string[] {
  const rawHeaders: string[] = []
  lines.forEach((line, index) => {
    // RFC 7230 §3.2.4: obs-fold is deprecated, and Node's HTTP server answers 400 to it.
    if (line.startsWith(' ') || line.startsWith('\t')) fail(`line ${index + 2}: folded header lines (obs-fold) are refused by Node's HTTP server`)
    const match = HEADER_LINE.exec(line)
    if (match === null) fail(`line ${index + 2}: expected "Name: value", got ${JSON.stringify(line)}`)
    rawHeaders.push(match[1]!, match[2]!.replace(/^[ \t]+|[ \t]+$/g, ''))
  })
  return rawHeaders
}

/** The first value of a header, case-insensitively. */
export function headerValue (rawHeaders: readonly string[], name: string): string | undefined {
  for (let i = 0; i < rawHeaders.length; i += 2) if (rawHeaders[i]!.toLowerCase() === name) return rawHeaders[i + 1]
  return undefined
}

/** RFC 7230 §4.1: chunk-size [ext] CRLF data CRLF ... 0 CRLF trailers CRLF. */
function decodeChunked (input: Buffer): Buffer {
  const chunks: Buffer[] = []
  let offset = 0
  for (;;) {
    const lineEnd = input.indexOf('\n', offset)
    if (lineEnd < 0) fail('chunked body: missing the last (0-size) chunk')
    const size = Number.parseInt(input.subarray(offset, lineEnd).toString('latin1').split(';')[0]!.trim(), 16)
    if (!Number.isSafeInteger(size)) fail('chunked body: bad chunk size')
    if (size === 0) return Buffer.concat(chunks)
    const start = lineEnd + 1
    if (start + size > input.length) fail('chunked body: a chunk is shorter than its size')
    chunks.push(input.subarray(start, start + size))
    offset = input.indexOf('\n', start + size) + 1
    if (offset === 0) fail('chunked body: missing the line end after a chunk')
  }
}

function readBody (rawHeaders: readonly string[], rest: Buffer, notes: string[]): Buffer {
  const encoding = headerValue(rawHeaders, 'transfer-encoding')
  if (encoding !== undefined) {
    if (encoding.toLowerCase() !== 'chunked') fail(`unsupported Transfer-Encoding ${JSON.stringify(encoding)} (only chunked)`)
    return decodeChunked(rest)
  }
  const length = headerValue(rawHeaders, 'content-length')
  if (length === undefined) {
    // RFC 7230 §3.3.3: a request with neither header has no body.
    if (rest.toString('latin1').trim() !== '') notes.push(`no Content-Length or Transfer-Encoding: the ${rest.length} bytes after the head are not the body`)
    return Buffer.alloc(0)
  }
  if (!/^\d+$/.test(length)) fail(`Content-Length ${JSON.stringify(length)} is not a number`)
  const size = Number(length)
  if (rest.length < size) fail(`Content-Length is ${size} but only ${rest.length} bytes follow the head`)
  if (rest.length > size && rest.subarray(size).toString('latin1').trim() !== '') notes.push(`${rest.length - size} bytes after the Content-Length body are ignored`)
  return rest.subarray(0, size)
}

/** Parses a raw HTTP/1.1 request: request line, headers, blank line, body. */
export function parseRawRequest (input: Buffer): RawRequest {
  const { head, rest } = splitHead(input)
  const [requestLine, ...headerLines] = head.split(/\r?\n/)
  const line = REQUEST_LINE.exec(requestLine!)
  if (line === null) fail(`line 1: expected "METHOD /target HTTP/1.1", got ${JSON.stringify(requestLine)}`)
  const rawHeaders = parseHeaders(headerLines)
  const notes: string[] = []
  const body = readBody(rawHeaders, rest, notes)
  return { method: line[1]!, target: line[2]!, rawHeaders, body, notes }
}
