import debug from 'debug'

export interface Logger {
  (formatter: string, ...args: unknown[]): void
  error: (formatter: string, ...args: unknown[]) => void
}

/** A debug-style logger per component: enable with DEBUG=stor:* */
export function logger (name: string): Logger {
  const log = debug(name) as unknown as Logger
  log.error = debug(`${name}:error`)
  return log
}
