import { pino, type Logger } from 'pino'

export type { Logger } from 'pino'

/** A logger that drops everything: the default for libraries that were given none. */
export function silentLogger (): Logger {
  return pino({ level: 'silent' })
}

/**
 * The logger a component should use: the injected one (or a silent one) with `component` bound,
 * so every line says where it came from.
 */
export function componentLogger (logger: Logger | undefined, component: string): Logger {
  return (logger ?? silentLogger()).child({ component })
}
