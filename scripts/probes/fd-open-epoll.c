/*
 * fd-open-epoll: how much of the fd-mode GET cost is the design, not objmapper's code.
 *
 * Like ipc-limits mode 1 (16-byte request, reply carries an fd, client preads 4 KiB and
 * closes it), with two switches that match what the objmapper server does:
 *   bit 0: the server open()s the file for every request and closes its copy after
 *          sendmsg (objmapper: a private file description per GET), instead of sending
 *          one long-lived fd;
 *   bit 1: the server waits in epoll_wait (edge-triggered) before each read, as an event
 *          loop does, instead of blocking in read().
 *
 *   cc -O2 -o /tmp/fd-open-epoll scripts/probes/fd-open-epoll.c
 *   head -c 4096 /dev/urandom > /tmp/4k
 *   for v in 0 1 2 3; do /tmp/fd-open-epoll $v 100000 /tmp/4k; done
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <sys/epoll.h>
#include <time.h>
#include <unistd.h>
static double now(void){struct timespec t;clock_gettime(CLOCK_MONOTONIC,&t);return t.tv_sec+t.tv_nsec*1e-9;}
int main(int argc,char**argv){int variant=atoi(argv[1]);long n=atol(argv[2]);int sv[2];socketpair(AF_UNIX,SOCK_STREAM,0,sv);
 const char*path=argc>3?argv[3]:"/tmp/4k";
 if(fork()==0){close(sv[0]);int s=sv[1];char b[64];int same=open(path,O_RDONLY);int ep=-1;
   if(variant&2){ep=epoll_create1(0);struct epoll_event e={.events=EPOLLIN|EPOLLET};epoll_ctl(ep,EPOLL_CTL_ADD,s,&e);}
   for(;;){ if(ep>=0){struct epoll_event e; epoll_wait(ep,&e,1,1000);} ssize_t r=read(s,b,16);if(r<=0)exit(0);
   int fd=(variant&1)?open(path,O_RDONLY|O_CLOEXEC):same;
   struct iovec io={b,16};char ctl[CMSG_SPACE(4)];struct msghdr m={.msg_iov=&io,.msg_iovlen=1,.msg_control=ctl,.msg_controllen=sizeof ctl};
   struct cmsghdr*h=CMSG_FIRSTHDR(&m);h->cmsg_level=SOL_SOCKET;h->cmsg_type=SCM_RIGHTS;h->cmsg_len=CMSG_LEN(4);memcpy(CMSG_DATA(h),&fd,4);
   sendmsg(s,&m,0); if(variant&1)close(fd);}}
 close(sv[1]);int s=sv[0];char b[64]={0};static char data[4096];double t=now();
 for(long i=0;i<n;i++){write(s,b,16);struct iovec io={b,64};char ctl[CMSG_SPACE(4)];struct msghdr m={.msg_iov=&io,.msg_iovlen=1,.msg_control=ctl,.msg_controllen=sizeof ctl};
  recvmsg(s,&m,MSG_CMSG_CLOEXEC);int fd;memcpy(&fd,CMSG_DATA(CMSG_FIRSTHDR(&m)),4);pread(fd,data,4096,0);close(fd);}
 double d=now()-t;printf("variant %d (open-per-req=%d epoll=%d): %.0f ops/s %.2f us\n",variant,variant&1,(variant&2)>>1,n/d,d/n*1e6);close(s);wait(0);}
