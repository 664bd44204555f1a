import { XMLBuilder, XMLParser } from 'fast-xml-parser'
import { S3Error } from './errors.ts'

const NS = 'http://s3.amazonaws.com/doc/2006-03-01/'
const builder = new XMLBuilder({ ignoreAttributes: false, attributeNamePrefix: '@_', suppressEmptyNode: false, processEntities: true })
const parser = new XMLParser({ ignoreAttributes: true, parseTagValue: false, trimValues: false, processEntities: true, isArray: (name) => name === 'Part' || name === 'Object' })

/** `<?xml ...?><ROOT xmlns=S3>...</ROOT>` from a plain object (arrays repeat their element). */
export function toXml (root: string, body: Record<string, unknown>, namespace = true): string {
  return '<?xml version="1.0" encoding="UTF-8"?>\n' + builder.build({ [root]: namespace ? { '@_xmlns': NS, ...body } : body })
}

/** Largest XML request body read (DeleteObjects of 1000 keys of 1 KiB, CompleteMultipartUpload of 10,000 parts). */
export const MAX_XML_BODY = 2 * 1024 * 1024

/** Parses an XML request body whose root must be `root`; MalformedXML otherwise. */
export function fromXml (text: string, root: string): Record<string, any> {
  let doc: Record<string, any>
  try {
    doc = parser.parse(text, true)
  } catch {
    throw new S3Error('MalformedXML', 'The XML you provided was not well-formed or did not validate against our published schema.')
  }
  const body = doc?.[root]
  if (body == null || typeof body !== 'object') throw new S3Error('MalformedXML', `The XML you provided was not well-formed or did not validate against our published schema (expected <${root}>).`)
  return body
}
