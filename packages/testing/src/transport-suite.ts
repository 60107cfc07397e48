/** Transport compliance suite: run the same cases against every Transport implementation. */
export {}
