import { describe, expect, it } from 'vitest'
import { stageRegistrySnapshotSchema, type StageChange } from '@phalanx/core'
import { chainGraph, createStageRegistry } from '../src/index.js'

const m = (id: string) => ({ id, address: `addr-${id}` })

describe('stage registry', () => {
  it('tracks members by stage in replica order, with a version bumped by every change', () => {
    const r = createStageRegistry({ graph: 3 })
    expect(r.graph).toEqual(chainGraph(3))
    expect(r.vacant()).toEqual([0, 1, 2])
    r.join(0, m('a'))
    r.join(1, m('b'))
    r.join(1, m('b2'))
    r.join(2, m('c'))
    expect(r.version).toBe(4)
    expect(r.vacant()).toEqual([])
    expect(r.membersOf(1).map((x) => x.id)).toEqual(['b', 'b2'])
    expect(r.stageOf('b2')).toBe(1)
    expect(r.leave('b', 'lost')).toBe(1)
    expect(r.leave('nobody', 'lost')).toBeUndefined()
    expect(r.version).toBe(5)
    expect(r.members().map((row) => row.map((x) => x.id))).toEqual([['a'], ['b2'], ['c']])
    expect(r.stageOf('b')).toBeUndefined()
    // Copies: changing what members() returned does not change the registry.
    r.members()[0]?.splice(0)
    expect(r.membersOf(0)).toEqual([m('a')])
  })

  it('refuses duplicates, unknown stages and full stages', () => {
    const r = createStageRegistry({ graph: 2, maxReplicas: 1 })
    r.join(0, m('a'))
    expect(() => { r.join(1, m('a')) }).toThrow(/already a member/)
    expect(() => { r.join(2, m('x')) }).toThrow(/not in \[0, 2\)/)
    expect(() => { r.join(0, m('y')) }).toThrow(/already has 1 replicas/)
    expect(() => { r.join(1, { id: '', address: 'x' }) }).toThrow(/non-empty/)
    expect(r.version).toBe(1)
  })

  it('derives neighbours from every route of the graph (CheckFree+ swapped route included)', () => {
    const r = createStageRegistry({ graph: { stages: 4, routes: [[0, 1, 2, 3], [0, 1, 0, 3, 2, 3]] } })
    expect(r.neighbours(0)).toEqual({ upstream: [1], downstream: [1, 3] })
    expect(r.neighbours(2)).toEqual({ upstream: [1, 3], downstream: [3] })
    expect(r.neighbours(3)).toEqual({ upstream: [0, 2], downstream: [2] })
    expect(() => createStageRegistry({ graph: { stages: 3, routes: [[0, 1]] } })).toThrow(/visit 2 of 3/)
    expect(() => createStageRegistry({ graph: { stages: 2, routes: [[0, 1, 2]] } })).toThrow(/outside/)
    expect(() => createStageRegistry({ graph: 0 })).toThrow()
  })

  it('reports changes to listeners and snapshots as schema-valid plain data', () => {
    const r = createStageRegistry({ graph: 2 })
    const changes: StageChange[] = []
    const off = r.on('change', (c) => changes.push(c))
    r.on('change', () => { throw new Error('a failing listener does not break the registry') })
    r.join(0, m('a'))
    r.join(1, m('b'))
    r.leave('b', 'lost')
    r.join(1, m('b-new'))
    off()
    r.leave('a', 'left')
    expect(changes.map((c) => [c.kind, c.stage, c.member.id, c.version])).toEqual([
      ['join', 0, 'a', 1], ['join', 1, 'b', 2], ['leave', 1, 'b', 3], ['join', 1, 'b-new', 4]
    ])
    expect(changes[2]).toMatchObject({ reason: 'lost' })
    const snap = r.snapshot()
    expect(stageRegistrySnapshotSchema.parse(snap)).toEqual({ version: 5, graph: chainGraph(2), members: [[], [m('b-new')]], lost: [0, 1] })
    expect(r.vacant()).toEqual([0])
  })
})
