package main

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/urfave/cli/v2"

	"github.com/etcdkit/etcdkit/cluster"
	"github.com/etcdkit/etcdkit/member"
)

// memberID reads a member's hex ID, or finds it by name.
func memberID(c *cli.Context, cl *cluster.Cluster, key string) (uint64, error) {
	ms, err := cl.Members(c.Context)
	if err != nil {
		return 0, err
	}
	if m, ok := member.Find(ms, key); ok {
		return m.ID, nil
	}
	if id, err := strconv.ParseUint(key, 16, 64); err == nil {
		return id, nil // let etcd say it does not know it
	}
	return 0, fmt.Errorf("%w: %q", member.ErrNoMember, key)
}

func peerURLs(c *cli.Context) ([]string, error) {
	s := c.String("peer-urls")
	if s == "" {
		return nil, usageError{fmt.Errorf("--peer-urls is required")}
	}
	return strings.Split(s, ","), nil
}

func memberCommand() *cli.Command {
	return &cli.Command{
		Name:  "member",
		Usage: "list and change the cluster's members; replace a dead member, learner first",
		Subcommands: []*cli.Command{
			online(&cli.Command{
				Name: "list", Usage: "the members, as etcdctl member list prints them",
				Action: withCluster(func(c *cli.Context, cl *cluster.Cluster) error {
					ms, err := cl.Members(c.Context)
					if err != nil {
						return err
					}
					return printMembers(c.App.Writer, writeOut(c), ms)
				}),
			}),
			online(&cli.Command{
				Name: "add", Usage: "add a member, as a learner unless --learner=false, and print how to start it (etcdctl member add)", ArgsUsage: "NAME",
				Flags: []cli.Flag{
					&cli.StringFlag{Name: "peer-urls", Usage: "the new member's peer URLs, comma separated"},
					&cli.BoolFlag{Name: "learner", Value: true, Usage: "add it as a learner (promote it when it has caught up)"},
				},
				Action: withClusterArgs(1, "the new member's NAME", func(c *cli.Context, cl *cluster.Cluster) error {
					urls, err := peerURLs(c)
					if err != nil {
						return err
					}
					m, start, err := member.Add(c.Context, cl, c.Args().First(), urls, !c.Bool("learner"))
					if err != nil {
						return err
					}
					as := ""
					if c.Bool("learner") {
						as = " as learner"
					}
					fmt.Fprintf(c.App.Writer, "Member %16x added%s to cluster %s\n\n%s\n", m.ID, as, clusterIDOf(c, cl), strings.Join(start.Env(), "\n"))
					if c.Bool("learner") {
						fmt.Fprintf(c.App.Writer, "\nStart it with these settings, then: etcdkit member promote %x\n", m.ID)
					}
					return nil
				}),
			}),
			online(&cli.Command{
				Name: "remove", Usage: "remove a member (etcdctl member remove)", ArgsUsage: "NAME|ID",
				Action: withClusterArgs(1, "a member's NAME or ID", func(c *cli.Context, cl *cluster.Cluster) error {
					id, err := memberID(c, cl, c.Args().First())
					if err != nil {
						return err
					}
					if _, err := cl.Client.MemberRemove(c.Context, id); err != nil {
						return fmt.Errorf("member remove %x: %w", id, err)
					}
					fmt.Fprintf(c.App.Writer, "Member %16x removed from cluster %s\n", id, clusterIDOf(c, cl))
					return nil
				}),
			}),
			online(&cli.Command{
				Name: "promote", Usage: "promote a learner once it has caught up (etcdctl member promote)", ArgsUsage: "NAME|ID",
				Flags: []cli.Flag{&cli.DurationFlag{Name: "wait", Usage: "keep trying this long while etcd says the learner is not in sync yet"}},
				Action: withClusterArgs(1, "a learner's NAME or ID", func(c *cli.Context, cl *cluster.Cluster) error {
					id, err := memberID(c, cl, c.Args().First())
					if err != nil {
						return err
					}
					if err := member.Promote(c.Context, cl, id, c.Duration("wait")); err != nil {
						return err
					}
					fmt.Fprintf(c.App.Writer, "Member %16x promoted in cluster %s\n", id, clusterIDOf(c, cl))
					return nil
				}),
			}),
			online(&cli.Command{
				Name: "update", Usage: "change a member's peer URLs (etcdctl member update): after a member moved to a new address", ArgsUsage: "NAME|ID",
				Flags: []cli.Flag{&cli.StringFlag{Name: "peer-urls", Usage: "the member's new peer URLs, comma separated"}},
				Action: withClusterArgs(1, "a member's NAME or ID", func(c *cli.Context, cl *cluster.Cluster) error {
					urls, err := peerURLs(c)
					if err != nil {
						return err
					}
					id, err := memberID(c, cl, c.Args().First())
					if err != nil {
						return err
					}
					if _, err := cl.Client.MemberUpdate(c.Context, id, urls); err != nil {
						return fmt.Errorf("member update %x: %w", id, err)
					}
					fmt.Fprintf(c.App.Writer, "Member %16x updated in cluster %s\n", id, clusterIDOf(c, cl))
					return nil
				}),
			}),
			online(&cli.Command{
				Name:      "replace",
				Usage:     "replace a dead member: add the new one as a learner, remove the dead one, promote the new one when it has caught up",
				ArgsUsage: "NAME|ID",
				Description: "Safe to run again after an interruption: it continues from the cluster's membership (a learner\n" +
					"already added with the same peer URLs is reused). Refuses a member that still answers unless --force.\n" +
					"Prints how to start the new member; with --wait it then waits for it and promotes it.",
				Flags: []cli.Flag{
					&cli.StringFlag{Name: "peer-urls", Usage: "the new member's peer URLs, comma separated"},
					&cli.StringFlag{Name: "name", Usage: "the new member's name (default: the replaced member's)"},
					&cli.BoolFlag{Name: "force", Usage: "replace a member that still answers"},
					&cli.DurationFlag{Name: "wait", Usage: "wait this long for the new member to catch up, then promote it (0: do not wait)"},
				},
				Action: withClusterArgs(1, "the NAME or ID of the member to replace", func(c *cli.Context, cl *cluster.Cluster) error {
					urls, err := peerURLs(c)
					if err != nil {
						return err
					}
					res, err := member.Replace(c.Context, cl, member.ReplaceOptions{
						Target: c.Args().First(), Name: c.String("name"), PeerURLs: urls, Force: c.Bool("force"), Wait: c.Duration("wait"),
						Step: func(s string) { fmt.Fprintln(c.App.ErrWriter, s) },
					})
					if res.Learner != "" && !res.Promoted {
						fmt.Fprintf(c.App.Writer, "Start the new member with:\n  etcd %s\nor the variables:\n%s\n", res.Start.Flags(), strings.Join(res.Start.Env(), "\n"))
						if err == nil {
							fmt.Fprintf(c.App.Writer, "then promote it: etcdkit member promote %s --wait 10m (or run this replace again with --wait)\n", res.Learner)
						}
					}
					if err != nil {
						return err
					}
					if res.Promoted {
						fmt.Fprintf(c.App.Writer, "Member %s is a voting member: the replacement is done\n", res.Learner)
					}
					return nil
				}),
			}),
		},
	}
}

// clusterIDOf is the cluster's ID as etcdctl prints it (%16x).
func clusterIDOf(c *cli.Context, cl *cluster.Cluster) string {
	resp, err := cl.Client.MemberList(c.Context)
	if err != nil {
		return "(unknown)"
	}
	return fmt.Sprintf("%16x", resp.Header.ClusterId)
}
