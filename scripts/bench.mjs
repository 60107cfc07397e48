// npm run bench -- <suite>: writes bench/results/<suite>.json
import { runSuite } from './run-suite.mjs'
runSuite('bench', 'bench/suites', process.argv.slice(2))
