/**
 * @packageDocumentation
 * Private: compliance suites (transport, aggregator, codec) and test harnesses.
 */
export {}
