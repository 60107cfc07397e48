#!/usr/bin/env node
// The `phalanx` command. The code lives in dist/src/main.js (built by `npm install` / `tsc -b`).
import { main } from '../dist/src/main.js'

process.exitCode = await main(process.argv.slice(2))
