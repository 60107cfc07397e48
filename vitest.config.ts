import { defaultServerConditions } from 'vite'
import { defineConfig } from 'vitest/config'

// '@phalanx/source' lets tests import sibling packages from src without a build step.
export default defineConfig({
  ssr: { resolve: { conditions: ['@phalanx/source', ...defaultServerConditions] } },
  test: {
    restoreMocks: true,
    projects: [
      { extends: true, test: { name: 'unit', include: ['packages/*/test/**/*.test.ts'], testTimeout: 20_000 } },
      { extends: true, test: { name: 'e2e', include: ['test/**/*.test.ts'], testTimeout: 120_000, hookTimeout: 60_000, fileParallelism: false } }
    ]
  }
})
