/**
 * @packageDocumentation
 * Phalanx transports: in-memory (./memory) and ZeroMQ with CURVE (./zmq).
 */
export {}
