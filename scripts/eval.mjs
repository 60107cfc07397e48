// npm run eval -- <name>: writes docs/results/<name>.json and docs/results/<name>.md
import { runSuite } from './run-suite.mjs'
runSuite('eval', 'eval', process.argv.slice(2))
